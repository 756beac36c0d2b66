r"""Five-fold cross-validation on a synthetic cohort, one row per training recipe, as a JSON table.

    python benchmarks/bench_cv.py                      # 40 patients, 96^3 crops, 5 folds (~30-60 min on 2 cores)
    python benchmarks/bench_cv.py --patients=15 --folds=3 --epochs=2   # a quick look

Rows, each adding one thing to the row above (issue 13's table):
  baseline          softmax over classes, crop + flips + intensity augmentation
  + regions         sigmoid outputs on the challenge's regions, Dice + BCE
  + full augment    trainer.augment.FULL_AUGMENT (rotation, scaling, elastic, noise, blur, ...)
  + ensemble        the five fold models of the row above, probabilities averaged
  + post-processing the rules cross-validation chose on the folds, applied to the ensemble

The first three rows are scored twice: on each fold's own validation patients
(the cross-validation mean over folds, what ``trainer.cross_validate`` prints)
and on the dataset's held-out ``val`` split (mean of the single fold models),
which is where an ensemble can be scored at all: every patient of the
training split was seen by four of the five folds.  Every model is small and
trained briefly (CPU budget): the point is that each piece runs and is
measured the same way, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BEAM_LOCAL = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=0"]
REGIONS = ("WT", "TC", "ET")


def log(message: str) -> None:
    print(f"[bench_cv {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str]) -> None:
    log(" ".join(cmd[1:]))
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def make_dataset(args, work: str) -> str:
    """Synthetic cohort -> a dataset version with ``args.folds`` folds over its training split."""
    cohort, out = os.path.join(work, "cohort"), os.path.join(work, "datasets")
    if not os.path.isdir(cohort):
        run([sys.executable, "-m", "synthetic.generate", f"--output_dir={cohort}",
             f"--num_patients={args.patients}", f"--shape={args.shape}"])
    run([sys.executable, "-m", "beam_pipeline.preprocess", "--config=configs/preprocess/synthetic_small.py",
         f"--config.crop.size={args.crop},{args.crop},{args.crop}", "--config.n4.shrink_factor=4",
         f"--config.split.num_folds={args.folds}", f"--input={cohort}", f"--output_dir={out}", *BEAM_LOCAL])
    versions = os.listdir(os.path.join(out, "synthetic"))
    assert len(versions) == 1, versions
    return os.path.join(out, "synthetic", versions[0])


def recipes(args) -> dict[str, list[str]]:
    from trainer.augment import FULL_AUGMENT

    common = [f"--config.epochs={args.epochs}", f"--config.steps_per_epoch={args.steps}",
              f"--config.patch_size={args.patch},{args.patch},{args.patch}", f"--config.seed={args.seed}"]
    regions = ["--config.target=regions"]
    full = [f"--config.augment.{name}={p}" for name, p in FULL_AUGMENT.items()]
    return {"baseline": common, "+ regions": common + regions, "+ full augment": common + regions + full}


def cross_validate(workdir: str, data_dir: str, overrides: list[str]) -> None:
    """The five folds of one row, unless an earlier run of the benchmark finished them."""
    from shared import trained_run

    if not os.path.exists(os.path.join(workdir, trained_run.CROSS_VALIDATION_DIR, "summary.json")):
        run([sys.executable, "-m", "trainer.cross_validate", "--config=configs/train/tiny_cpu.py",
             f"--workdir={workdir}", f"--config.data_dir={data_dir}", *overrides])


def cv_means(workdir: str) -> dict:
    from shared import trained_run

    about = json.load(open(os.path.join(workdir, trained_run.CROSS_VALIDATION_DIR, "summary.json")))["about"]
    return {r: round(about["mean_over_folds"][f"dice_{r}"], 4) for r in REGIONS}


def held_out(model, data_dir: str, postprocessing: str = "none") -> dict:
    """Mean Dice per region on the dataset's ``val`` split (patients no fold trained on)."""
    from evaluation import scoring
    from serving import predictor as predictor_lib

    predictor = predictor_lib.load_predictor(model, data_dir, window="volume", postprocessing=postprocessing)
    rows, failures = scoring.score_model(predictor, data_dir, "val", echo=lambda *_: None)
    assert not failures, failures
    return {r: round(float(np.mean([row[f"dice_{r}"] for row in rows])), 4) for r in REGIONS}


def fold_models(workdir: str, folds: int) -> list[str]:
    from shared import trained_run

    return [trained_run.model_file(trained_run.fold_dir(workdir, k)) for k in range(folds)]


def mean_of(scores: list[dict]) -> dict:
    return {r: round(float(np.mean([s[r] for s in scores])), 4) for r in REGIONS}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=40, help="synthetic patients (default 40; 20%% held out)")
    parser.add_argument("--shape", default="112,112,104", help="synthetic volume shape (default 112,112,104)")
    parser.add_argument("--crop", type=int, default=96, help="cubic crop of the records (default 96)")
    parser.add_argument("--patch", type=int, default=32, help="cubic training patch (default 32)")
    parser.add_argument("--folds", type=int, default=5, help="folds over the training split (default 5)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per fold (default 4)")
    parser.add_argument("--steps", type=int, default=20, help="steps of batch 2 per epoch (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every fold (default 0)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench_data", "cv"),
                        help="cohort, dataset and runs (reused when present: delete it to start over)")
    args = parser.parse_args(argv)
    start = time.time()
    data_dir = make_dataset(args, args.workdir)
    rows = []
    last = None
    for name, overrides in recipes(args).items():
        workdir = os.path.join(args.workdir, "runs", name.strip("+ ").replace(" ", "_"))
        began = time.time()
        cross_validate(workdir, data_dir, overrides)
        minutes = round((time.time() - began) / 60, 1)
        singles = [held_out(path, data_dir) for path in fold_models(workdir, args.folds)]
        rows.append({"row": name, "cv_mean_over_folds": cv_means(workdir), "held_out_single_fold_mean": mean_of(singles),
                     "minutes": minutes, "command": f"python -m trainer.cross_validate "
                     f"--config=configs/train/tiny_cpu.py --workdir={workdir} --config.data_dir={data_dir} "
                     + " ".join(overrides)})
        log(json.dumps(rows[-1]))
        last = workdir
    rows.append({"row": "+ ensemble", "held_out": held_out(last, data_dir),
                 "command": f"python -m evaluation.evaluate --model={last} --split=val --window=volume "
                            "--postprocessing=none"})
    from shared import trained_run

    choice = json.load(open(os.path.join(last, trained_run.POSTPROCESSING_FILE)))
    rows.append({"row": "+ post-processing", "held_out": held_out(last, data_dir, "auto"), "rules": choice["rules"],
                 "cv_mean_dice_before_after": [round(choice["mean_dice_before"], 4),
                                               round(choice["mean_dice_after"], 4)],
                 "command": f"python -m evaluation.evaluate --model={last} --split=val --window=volume"})
    print(json.dumps({"benchmark": "bench_cv", "args": vars(args), "data_dir": data_dir, "rows": rows,
                      "wall_minutes": round((time.time() - start) / 60, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
