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

Preprocessing alone, side by side (``preprocessing_cores``): one patient
preprocessed with ``threads=1`` (what interactive prediction ran before the
core took a core count: every channel's N4 one after another on one core)
and with ``threads=os.cpu_count()`` (today: the channels' N4 side by side),
alternating for ``--preprocess_rounds`` rounds; medians, their ratio, and
whether both gave the same record bytes.
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
    from trainer import model as model_lib

    run = os.path.join(workdir, f"run_{preset}")
    os.makedirs(run, exist_ok=True)
    path = os.path.join(run, "model.keras")
    if not os.path.exists(path):
        keras.utils.set_random_seed(0)
        model_lib.build_unet((None, None, None, 4), model_lib.preset(preset)).save(path)
    cfg = brats2020.get_config().to_dict()
    with open(os.path.join(run, "lineage.json"), "w") as f:
        json.dump({"data_dir": "", "version_id": "benchmark", "preprocess": cfg}, f)
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({"patch_size": list(WINDOWS[preset])}, f)
    return path


def _measure(model_path: str, folders: list[str], tta: str) -> dict:
    from serving import inference, prediction

    predictor = prediction.load_predictor(model_path)
    warm = np.zeros(tuple(predictor.window) + (len(predictor.channels),), np.float32)
    inference.sliding_window(predictor.predict_fn(), warm, predictor.window)  # trace this window shape untimed
    pre, inf = [], []
    for folder in folders:
        source, convention = prediction.source_from_folder(folder, predictor)
        pred = prediction.predict_patient(predictor, source, convention, tta=tta)
        pre.append(pred.seconds["preprocess"])
        inf.append(pred.seconds["inference"])
        log(f"  {os.path.basename(folder)}: preprocess {pre[-1]:.1f} s, inference {inf[-1]:.1f} s")
    windows = 1
    for dim, size in zip(prediction.window_size("volume", None, predictor.preprocess_cfg), predictor.window):
        windows *= len(inference.window_starts(dim, size, 0.5))
    passes = len(inference.flip_sets(tta))
    return {"window": list(predictor.window), "windows_per_patient": windows, "forward_passes": windows * passes,
            "preprocess_s": round(statistics.median(pre), 2), "inference_s": round(statistics.median(inf), 2),
            "total_s": round(statistics.median(p + i for p, i in zip(pre, inf)), 2),
            "inference_s_per_forward_pass": round(statistics.median(inf) / (windows * passes), 2),
            "all_preprocess_s": [round(x, 2) for x in pre], "all_inference_s": [round(x, 2) for x in inf]}


def _preprocess_cores(model_path: str, folder: str, rounds: int) -> dict:
    """Seconds to preprocess one patient on one core vs on all cores, alternating; same bytes?"""
    from preprocessing.patient import preprocess
    from serving import prediction
    from shared import schema

    predictor = prediction.load_predictor(model_path, with_model=False)
    source, _ = prediction.source_from_folder(folder, predictor)
    cfg = dict(predictor.preprocess_cfg, require_seg=False)
    cores = os.cpu_count() or 1
    preprocess(source, cfg, threads=cores)  # warm-up: antspyx import, page cache
    times: dict[int, list[float]] = {1: [], cores: []}
    records = {}
    for r in range(rounds):
        for threads in (1, cores):
            start = time.perf_counter()
            records[threads] = schema.encode(preprocess(source, cfg, threads=threads).record)
            times[threads].append(time.perf_counter() - start)
            log(f"  preprocess threads={threads} round {r + 1}: {times[threads][-1]:.2f} s")
    one, many = statistics.median(times[1]), statistics.median(times[cores])
    return {"patient": os.path.basename(folder), "cores": cores, "rounds": rounds,
            "one_core_s": round(one, 2), "all_cores_s": round(many, 2), "speedup": round(one / many, 2),
            "same_record_bytes": records[1] == records[cores],
            "all_one_core_s": [round(x, 2) for x in times[1]], "all_all_cores_s": [round(x, 2) for x in times[cores]]}


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
