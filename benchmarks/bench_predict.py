"""Prediction speed on this machine's CPU: seconds per patient, preprocessing and inference apart.

    python benchmarks/bench_predict.py [--presets=seed,nnunet] [--tta=none,axes] [--patients=1]

Progress goes to stderr; one JSON object, the results, goes to stdout.

Data: ``--patients`` synthetic BraTS 2020 patients at 240x240x155
(``synthetic_data.write_cohort``, kept under ``--workdir`` and reused).

Models: for each preset a run directory as the trainer leaves it (model.keras
with 4 input channels, config.json with the preset's training patch size,
lineage.json with the preprocessing config of ``configs/preprocess/brats2020.py``:
the seeds' 144^3 box and N4).  The weights are the untrained initial ones;
speed does not depend on their values.  Windows: the seed preset trained on
whole 144^3 crops (one window per pass); the default (nnunet) on 128^3 patches
(2x2x2 = 8 windows of 128^3 over the 144^3 crop at 50 % overlap).

Measured per preset and TTA mode, with ``serving.prediction.predict_patient``
(exactly what ``python -m serving.predict`` runs, writing excluded):
preprocessing seconds (load, mask, crop, N4, z-score) and inference seconds
(sliding window with Gaussian weighting; TTA ``axes`` = 4 passes per window,
``all`` = 8), the median over patients.  A warm-up pass over one window of
the same shape runs first, so graph tracing is not counted.

Preprocessing alone, side by side (``preprocessing_cores``), alternating
for ``--preprocess_rounds`` rounds: one patient preprocessed as interactive
prediction did before (``before_one_core``: antspyx's own shrinking by 4 on
the full grid, channels one after another on one core), and today on one
core and on all cores (the channels' N4 fits in worker processes); medians,
their ratios, and whether one and all cores gave the same record bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHAPE = (240, 240, 155)
WINDOWS = {"seed": (144, 144, 144), "nnunet": (128, 128, 128), "tiny": (32, 32, 32)}


def log(message: str) -> None:
    print(f"[bench-predict {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _cohort(workdir: str, patients: int) -> list[str]:
    from synthetic import cohort as synthetic_data

    root = os.path.join(workdir, "cohort")
    done = os.path.join(root, ".complete")
    if not os.path.exists(done) or open(done).read() != str(patients):
        log(f"writing {patients} synthetic patient(s) at {SHAPE} to {root}")
        synthetic_data.write_cohort(root, patients, shape=SHAPE, seed=11)
        with open(done, "w") as f:
            f.write(str(patients))
    return sorted(os.path.join(root, d) for d in os.listdir(root) if d.startswith("BraTS20_"))


def _run_dir(workdir: str, preset: str) -> str:
    """A trainer-shaped run directory around an untrained model of ``preset``."""
    import keras

    from configs.preprocess import brats2020
    from shared import trained_run
    from trainer import model as model_lib

    run = os.path.join(workdir, f"run_{preset}")
    os.makedirs(run, exist_ok=True)
    path = trained_run.model_file(run)
    if not os.path.exists(path):
        keras.utils.set_random_seed(0)
        model_lib.build_unet((None, None, None, 4), model_lib.preset(preset)).save(path)
    cfg = brats2020.get_config().to_dict()
    trained_run.write_lineage(run, trained_run.Lineage(version_id="benchmark", data_dir="", preprocess=cfg))
    trained_run.write_config(run, {"patch_size": list(WINDOWS[preset])})
    return path


def _measure(model_path: str, folders: list[str], tta: str) -> dict:
    from serving import inference, inputs, prediction, predictor as predictor_lib

    predictor = predictor_lib.load_predictor(model_path)
    warm = np.zeros(tuple(predictor.window) + (len(predictor.channels),), np.float32)
    inference.sliding_window(predictor.predict_fn(), warm, predictor.window)  # trace this window shape untimed
    pre, inf = [], []
    for folder in folders:
        source, convention = inputs.source_from_folder(folder, predictor)
        pred = prediction.predict_patient(predictor, source, convention, tta=tta)
        pre.append(pred.seconds["preprocess"])
        inf.append(pred.seconds["inference"])
        log(f"  {os.path.basename(folder)}: preprocess {pre[-1]:.1f} s, inference {inf[-1]:.1f} s")
    windows = 1
    for dim, size in zip(predictor_lib.window_size("volume", None, predictor.preprocess_cfg), predictor.window):
        windows *= len(inference.window_starts(dim, size, 0.5))
    passes = len(inference.flip_sets(tta))
    return {"window": list(predictor.window), "windows_per_patient": windows, "forward_passes": windows * passes,
            "preprocess_s": round(statistics.median(pre), 2), "inference_s": round(statistics.median(inf), 2),
            "total_s": round(statistics.median(p + i for p, i in zip(pre, inf)), 2),
            "inference_s_per_forward_pass": round(statistics.median(inf) / (windows * passes), 2),
            "all_preprocess_s": [round(x, 2) for x in pre], "all_inference_s": [round(x, 2) for x in inf]}


def _legacy_correct_channels(volumes, mask, spacing, params, threads=1):
    """N4 as interactive prediction ran it before the core took a core count: the baseline.

    antspyx shrinking by 4 itself (B-spline field rebuilt on the full grid),
    3 levels of 20 iterations, tolerance 1e-4, one channel after another on
    one ITK thread: the previous ``configs/preprocess/default.py`` and
    ``n4.estimate_bias``.
    """
    from preprocessing import n4

    ants = n4._ants()
    out = []
    for volume in volumes:
        fit = ants.from_numpy((mask & (volume > 0)).astype(np.float32), spacing=tuple(spacing))
        image = ants.from_numpy(np.ascontiguousarray(volume, dtype=np.float32), spacing=tuple(spacing))
        field = ants.n4_bias_field_correction(image, mask=fit, shrink_factor=4,
                                              convergence={"iters": [20, 20, 20], "tol": 1e-4},
                                              spline_param=[1, 1, 1], return_bias_field=True).numpy()
        corrected = np.zeros(volume.shape, dtype=np.float32)
        corrected[mask] = volume[mask] / field[mask]
        out.append(corrected)
    return out


def _preprocess_cores(model_path: str, folder: str, rounds: int) -> dict:
    """Seconds to preprocess one patient: before (baseline N4, one core) vs now on one core and on all cores."""
    from preprocessing import n4
    from preprocessing.patient import preprocess
    from serving import inputs, predictor as predictor_lib
    from shared import schema

    predictor = predictor_lib.load_predictor(model_path, with_model=False)
    source, _ = inputs.source_from_folder(folder, predictor)
    cfg = dict(predictor.preprocess_cfg, require_seg=False)
    cores = os.cpu_count() or 1
    current = n4.correct_channels

    def before():
        n4.correct_channels = _legacy_correct_channels
        try:
            return preprocess(source, cfg, threads=1)
        finally:
            n4.correct_channels = current

    variants = {"before_one_core": before, "now_one_core": lambda: preprocess(source, cfg, threads=1),
                f"now_{cores}_cores": lambda: preprocess(source, cfg, threads=cores)}
    for run in variants.values():
        run()  # warm-up: antspyx import, the N4 worker pool, page cache
    times: dict[str, list[float]] = {name: [] for name in variants}
    records = {}
    for r in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            records[name] = schema.encode(run().record)
            times[name].append(time.perf_counter() - start)
            log(f"  preprocess {name} round {r + 1}: {times[name][-1]:.2f} s")
    medians = {name: round(statistics.median(t), 2) for name, t in times.items()}
    best = min(medians[f"now_{cores}_cores"], medians["now_one_core"])
    return {"patient": os.path.basename(folder), "cores": cores, "rounds": rounds, "median_s": medians,
            "speedup_before_over_now_best": round(medians["before_one_core"] / best, 2),
            "speedup_one_core_over_all_cores": round(medians["now_one_core"] / medians[f"now_{cores}_cores"], 2),
            "now_same_bytes_on_one_and_all_cores": records["now_one_core"] == records[f"now_{cores}_cores"],
            "all_s": {name: [round(x, 2) for x in t] for name, t in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="seed,nnunet", help="Model presets (seed, nnunet, tiny).")
    parser.add_argument("--tta", default="none,axes", help="TTA modes to time (none, axes, all).")
    parser.add_argument("--patients", type=int, default=1, help="Synthetic patients predicted per combination.")
    parser.add_argument("--preprocess_rounds", type=int, default=3,
                        help="Rounds of the one-core vs all-cores preprocessing comparison (0: skip it).")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench_data", "predict"), help="Data and models.")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    folders = _cohort(args.workdir, args.patients)
    cores = None
    if args.preprocess_rounds:
        log("preprocessing one patient on one core vs all cores")
        cores = _preprocess_cores(_run_dir(args.workdir, "tiny"), folders[0], args.preprocess_rounds)
    results = []
    for preset in args.presets.split(","):
        model_path = _run_dir(args.workdir, preset)
        for tta in args.tta.split(","):
            log(f"{preset}, TTA {tta}")
            start = time.time()
            try:
                row = _measure(model_path, folders, tta)
            except Exception as exc:  # e.g. out of memory: record it, go on
                row = {"error": f"{type(exc).__name__}: {exc}"}
            results.append({"preset": preset, "tta": tta, **row, "wall_s": round(time.time() - start, 1)})
    print(json.dumps({
        "benchmark": "predict",
        "environment": {"cpus": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__,
                        "gpu": [d.name for d in tf.config.list_physical_devices("GPU")]},
        "volume_shape": SHAPE, "crop": [144, 144, 144], "patients": len(folders),
        "preprocessing_cores": cores, "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
