r"""The default recipe on a hard synthetic cohort, scored in source space on held-out patients (prints JSON).

    python benchmarks/bench_science.py                       # 24 patients at 240x240x155, 3 seeds (hours)
    nice python benchmarks/bench_science.py --patients=12 --shape=96,96,80 --seeds=0 --test_patients=4

What a new user gets, through the entry points a user runs, each as a
subprocess whose CPU time is one phase of the report:

1. ``synthetic.generate --hard``: a training cohort, and a test cohort of
   other patients (another generator seed), never seen in training or in
   any choice made at its end;
2. ``beam_pipeline.preprocess`` with the challenge's default config (the
   brain's bounding box crop; ``--crop_size`` asks for one record shape
   around the brain instead, ``crop.mode=brain``);
3. ``trainer.train`` with the demo-sized recipe (``tiny_cpu``; ``--steps``
   as EPOCHSxSTEPS), one run per seed; its end chooses the window/TTA and
   the post-processing on the validation split;
4. ``serving.predict`` on the test cohort with the run's defaults, and
   ``evaluation.evaluate --pred_dir`` scoring them in source space,
   whole-region and lesion-wise.

Reported per region: Dice and HD95 (mean, median, worst over test patients
and seeds) under the challenge's own scheme, lesion-wise F1 for WT under
BraTS 2026's matched lesions, and the CPU and wall seconds of each phase
(CPU: of the processes each phase waited for; Beam's worker processes may
be missed, and other jobs on the machine stretch the wall seconds).  The
hard cohort's seeds here (``--cohort_seed``) are not the ones anything was
tuned on.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEAM_LOCAL = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=0"]
REGIONS = ("WT", "TC", "ET")
LESION_SCHEME = "brats2026"  # matched lesions (TP/FP/FN, F1); the challenge's own scheme scores whole regions


def log(message: str) -> None:
    print(f"[bench_science {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(phase: str, args: list[str], cpu: dict, wall: dict) -> None:
    """Run one entry point, adding its CPU and wall seconds to ``phase``; its output goes to stderr."""
    log(f"{phase}: {' '.join(args[:3])} ...")
    before, start = children_cpu(), time.perf_counter()
    subprocess.run([sys.executable, "-m"] + args, cwd=REPO, check=True, stdout=sys.stderr)
    cpu[phase] = cpu.get(phase, 0.0) + children_cpu() - before
    wall[phase] = wall.get(phase, 0.0) + time.perf_counter() - start


def crop_size(shape: tuple[int, ...], asked: str) -> str | None:
    """The record shape when asked (``crop.mode=brain``); None: the challenge's default crop (the brain's
    bounding box, a shape per patient, on any grid)."""
    return asked or None


def stats(values: list[float], worst) -> dict:
    finite = [v for v in values if v == v and math.isfinite(v)]
    if not finite:
        return {"n": 0}
    ordered = sorted(finite)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {"n": len(finite), "mean": round(sum(finite) / len(finite), 4), "median": round(median, 4),
            "worst": round(worst(finite), 4)}


def read_scores(eval_dir: str) -> list[dict]:
    with open(os.path.join(eval_dir, "scores.csv")) as handle:
        return list(csv.DictReader(handle))


def merge_lesion_f1(rows: list[dict], lesion_rows: list[dict]) -> list[dict]:
    """The challenge scheme's rows with each patient's ``lesion_f1_WT`` from the matched-lesion scheme."""
    f1 = {r["patient"]: r.get("lesion_f1_WT") for r in lesion_rows}
    return [dict(r, lesion_f1_WT=f1.get(r["patient"])) for r in rows]


def number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return float("nan")


def table(rows: list[dict]) -> dict:
    """Dice and HD95 per region (mean, median, worst) and WT's lesion-wise F1 over every scored patient."""
    out = {}
    for region in REGIONS:
        out[region] = {"dice": stats([number(r.get(f"dice_{region}")) for r in rows], min),
                       "hd95_mm": stats([number(r.get(f"hd95_{region}")) for r in rows], max)}
    out["WT"]["lesion_f1"] = stats([number(r.get("lesion_f1_WT")) for r in rows], min)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=24, help="training cohort (train and val splits)")
    parser.add_argument("--test_patients", type=int, default=6, help="held-out test cohort (another seed)")
    parser.add_argument("--shape", default="240,240,155")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    parser.add_argument("--steps", default="", help="EPOCHSxSTEPS for the tiny_cpu recipe (default: its own)")
    parser.add_argument("--cohort_seed", type=int, default=2301, help="generator seed (not one anything was tuned on)")
    parser.add_argument("--crop_size", default="", help="record shape X,Y,Z (default: see crop_size())")
    parser.add_argument("--challenge", default="brats2020")
    parser.add_argument("--workdir", default="/tmp/bench_science")
    parser.add_argument("--train_flags", default="",
                        help="extra trainer.train flags for a recipe variant, e.g. '--config.target=regions'")
    parser.add_argument("--label", default="", help="name of this variant's runs under --workdir (default: none)")
    parser.add_argument("--ablate_postprocessing", action="store_true",
                        help="also predict the first seed's run without its post-processing and report both tables "
                             "for that seed (not timed)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the cohorts and dataset already in --workdir (same arguments), train again")
    return parser.parse_args(argv)


def dataset_dir(workdir: str) -> str:
    """The newest dataset version under ``workdir`` (a code change preprocesses into a new one)."""
    found = glob.glob(os.path.join(workdir, "datasets", "hard", "*", "manifest.json"))
    return os.path.dirname(max(found, key=os.path.getmtime)) + os.sep


def lost_to_crop(data_dir: str) -> list[str]:
    """Training patients whose tumour voxels the crop cut (the preprocessing warning)."""
    with open(os.path.join(data_dir, "manifest.json")) as handle:
        warnings = json.load(handle).get("warnings") or {}
    return sorted(p for p, notes in warnings.items() if any("outside the crop box" in n for n in notes))


def prepare(args, shape, cpu, wall) -> str:
    """Generate both cohorts and preprocess the training one; returns the dataset version directory.

    ``--reuse`` keeps cohorts already generated there (same count) and lets
    preprocessing reuse a complete dataset version (the same inputs, code and config).
    """
    if not args.reuse:
        shutil.rmtree(args.workdir, ignore_errors=True)
    cohort, test = os.path.join(args.workdir, "cohort"), os.path.join(args.workdir, "test")
    common = [f"--shape={args.shape}", f"--challenge={args.challenge}", "--hard"]
    for folder, count, seed in ((cohort, args.patients, args.cohort_seed), (test, args.test_patients,
                                                                           args.cohort_seed + 1)):
        if args.reuse and os.path.isdir(folder) and len(patient_folders(folder)) == count:
            log(f"reusing {folder}")
            continue
        shutil.rmtree(folder, ignore_errors=True)
        run("generate", ["synthetic.generate", f"--output_dir={folder}", f"--num_patients={count}",
                         f"--seed={seed}"] + common, cpu, wall)
    config = [f"--config={os.path.join(REPO, 'configs/preprocess/challenge.py')}:{args.challenge}",
              "--config.n4.shrink_factor=4", "--config.name=hard"]
    size = crop_size(shape, args.crop_size)
    if size:
        config += ["--config.crop.mode=brain", f"--config.crop.size={size}"]
    run("preprocess", ["beam_pipeline.preprocess"] + config + [f"--input={cohort}",
                       f"--output_dir={os.path.join(args.workdir, 'datasets')}"] + BEAM_LOCAL, cpu, wall)
    return dataset_dir(args.workdir)


def patient_folders(cohort: str) -> list[str]:
    """A generated cohort's patient folders (not its ``bias_fields`` folder or name mapping)."""
    return [os.path.join(cohort, name) for name in sorted(os.listdir(cohort))
            if os.path.isdir(os.path.join(cohort, name)) and name != "bias_fields"]


def test_patients(workdir: str) -> str:
    """The test cohort's patient folders, comma-separated."""
    return ",".join(patient_folders(os.path.join(workdir, "test")))


def predict_and_score(args, run_dir: str, tag: str, cpu, wall, extra: tuple[str, ...] = ()) -> list[dict]:
    """Predict the test cohort with the run's defaults (plus ``extra`` predict flags) and score in source space."""
    preds, scored = os.path.join(args.workdir, f"pred_{tag}"), os.path.join(args.workdir, f"eval_{tag}")
    for old in (preds, scored, f"{scored}_lesions"):  # a re-run of this variant and seed starts clean
        shutil.rmtree(old, ignore_errors=True)
    run("predict", ["serving.predict", f"--model={run_dir}/model.keras", f"--input={test_patients(args.workdir)}",
                    f"--output_dir={preds}", *extra], cpu, wall)
    truth = f"--truth_dir={os.path.join(args.workdir, 'test')}"
    run("evaluate", ["evaluation.evaluate", f"--pred_dir={preds}", truth, f"--challenge={args.challenge}",
                     f"--output_dir={scored}"], cpu, wall)
    run("evaluate", ["evaluation.evaluate", f"--pred_dir={preds}", truth, f"--challenge={args.challenge}",
                     f"--scheme={LESION_SCHEME}", f"--output_dir={scored}_lesions"], cpu, wall)
    return merge_lesion_f1(read_scores(scored), read_scores(f"{scored}_lesions"))


def _steps_flags(steps: str) -> list[str]:
    """``--steps=EPOCHSxSTEPS`` as trainer flags; none (the recipe's own) when empty."""
    if not steps:
        return []
    epochs, per_epoch = (int(v) for v in steps.lower().split("x"))
    return [f"--config.epochs={epochs}", f"--config.steps_per_epoch={per_epoch}"]


def one_seed(args, seed: int, data_dir: str, cpu, wall) -> tuple[list[dict], list[dict], dict]:
    """Train, predict the test cohort with the run's defaults, score in source space: the per-patient rows,
    and the same without post-processing when ``--ablate_postprocessing`` asks (else empty)."""
    tag = f"{args.label}_{seed}" if args.label else str(seed)
    run_dir = os.path.join(args.workdir, f"run_{tag}")
    shutil.rmtree(run_dir, ignore_errors=True)
    run("train", ["trainer.train", f"--config={os.path.join(REPO, 'configs/train/tiny_cpu.py')}",
                  f"--workdir={run_dir}", f"--data_dir={data_dir}", f"--config.seed={seed}"]
        + _steps_flags(args.steps) + shlex.split(args.train_flags), cpu, wall)
    rows = predict_and_score(args, run_dir, tag, cpu, wall)
    first = seed == int(args.seeds.split(",")[0])
    raw = (predict_and_score(args, run_dir, f"{tag}_nopost", {}, {}, ("--postprocessing=none",))
           if args.ablate_postprocessing and first else [])
    with open(os.path.join(run_dir, "inference.json")) as handle:
        choice = json.load(handle)
    for row in rows + raw:
        row["seed"] = seed
    return rows, raw, {"seed": seed, "window": choice["window"], "tta": choice["tta"],
                       "choice_s": choice.get("seconds"),
                       "postprocessing": (choice.get("postprocessing") or {}).get("rules")}


def main(argv=None) -> None:
    args = parse_args(argv)
    shape = tuple(int(v) for v in args.shape.replace("x", ",").split(","))
    cpu: dict[str, float] = {}
    wall: dict[str, float] = {}
    data_dir = prepare(args, shape, cpu, wall)
    rows, raw, runs = [], [], []
    for seed in (int(s) for s in args.seeds.split(",") if s):
        seed_rows, seed_raw, about = one_seed(args, seed, data_dir, cpu, wall)
        rows += seed_rows
        raw += seed_raw
        runs.append(about)
    result = {"command": " ".join([os.path.basename(sys.argv[0])] + (argv or sys.argv[1:])),
              "patients": args.patients, "test_patients": args.test_patients, "shape": list(shape),
              "seeds": args.seeds, "steps": args.steps, "cohort_seed": args.cohort_seed,
              "train_flags": args.train_flags, "dataset": os.path.basename(os.path.dirname(data_dir)),
              "lost_to_crop": lost_to_crop(data_dir), "scored": len(rows),
              "space": "source", "regions": table(rows), "runs": runs,
              **({"first_seed_with_postprocessing": table([r for r in rows if r["seed"] == raw[0]["seed"]]),
                  "first_seed_without_postprocessing": table(raw)} if raw else {}),
              "cpu_s": {k: round(v, 1) for k, v in cpu.items()}, "wall_s": {k: round(v, 1) for k, v in wall.items()}}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
