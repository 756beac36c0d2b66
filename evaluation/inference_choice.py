"""Which sliding window and TTA segment best with one trained model, measured on its validation split.

The answer depends on the model: a network trained on small patches of
larger crops sees little context in a patch-sized window, and the whole crop
can score higher (the demo's tiny model: WT Dice 0.90 against 0.80); a
network trained on 64³ patches of 144³ crops scored higher with the patch
window.  So nothing is guessed: at the end of training (``inference_choice``
in the train config) each candidate window x TTA is run over the run's
validation patients, and ``inference.json`` beside ``lineage.json`` records
every candidate's scores and the best.  ``serving.predict``, ``evaluation.evaluate
--model`` and the app use it when not told otherwise
(:func:`serving.predictor.inference_settings`).

Scored on the records' cropped grid (:func:`evaluation.scoring.score_model`'s
path: no raw scans, no N4, cheap), by the mean over patients of each
patient's mean Dice over the ranked regions (WT, TC, ET), the number BraTS
ranks by.  A tie goes to the cheaper candidate (listed first).
"""

from __future__ import annotations

import itertools
import time
from typing import Callable, Sequence

import numpy as np

from shared import metrics, trained_run
from shared.trained_run import TrainedRun
from evaluation import scoring
from serving import inference, prediction, predictor as predictor_lib

WINDOWS = ("patch", "volume")
TTA_MODES = ("none", "all")
METRIC = "mean over validation patients of each patient's mean Dice over {regions} (cropped grid)"


def _windows(predictor: predictor_lib.Predictor, run: TrainedRun, windows: Sequence[str]) -> dict[str, tuple]:
    """Window name -> size; a window the same size as an earlier one is left out (patch = crop)."""
    sizes: dict[str, tuple] = {}
    for name in windows:
        size = predictor_lib.window_size(name, run.patch_size, predictor.preprocess_cfg)
        if size not in sizes.values():
            sizes[name] = size
    return sizes


def choose(model_path: str, windows: Sequence[str] = WINDOWS, tta_modes: Sequence[str] = TTA_MODES,
           overlap: float = 0.5, data_dir: str | None = None, echo: Callable[[str], None] = print) -> dict:
    """Score every window x TTA on the run's validation patients; the record :func:`shared.trained_run.write_inference` saves.

    FileNotFoundError when the run has no lineage.json or validation
    patients, or its dataset is not reachable.
    """
    run = trained_run.run_of_model(model_path)
    if run is None:
        raise FileNotFoundError(f"no {trained_run.LINEAGE_FILE} beside {model_path}: not a training run")
    predictor = predictor_lib.load_predictor(model_path, data_dir, postprocessing="auto")
    if predictor.data_dir is None:
        raise FileNotFoundError(f"the dataset {model_path} was trained on is not reachable: pass its directory")
    split, patients = run.validation()
    sizes = _windows(predictor, run, windows)
    candidates = list(itertools.product(sizes, tta_modes))
    regions = metrics.ranked_regions(predictor.challenge)
    per_patient: dict[tuple[str, str], list[dict]] = {c: [] for c in candidates}
    predict = predictor.predict_fn()
    start = time.perf_counter()
    for record in scoring.records_of_split(predictor.data_dir, split, patients):
        if record.mask.shape[-1] == 0:
            continue
        image, truth = record.image.astype(np.float32), np.argmax(record.mask, axis=-1).astype(np.uint8)
        for window, tta in candidates:
            probs = inference.sliding_window(predict, image, sizes[window], overlap=overlap, tta=tta)
            per_patient[(window, tta)].append(
                metrics.region_dice(prediction.classes_of(predictor, probs), truth, predictor.challenge, regions))
    if not per_patient[candidates[0]]:
        raise FileNotFoundError(f"{model_path}'s run has no labelled validation patients to choose on")
    scored = [_candidate(window, sizes[window], tta, per_patient[(window, tta)], regions)
              for window, tta in candidates]
    best = max(scored, key=lambda c: c["patient_dice_mean"])  # max keeps the first of equals: the cheaper
    echo(format_choice(scored, best) + f" ({time.perf_counter() - start:.1f} s)")
    return {"window": best["window"], "tta": best["tta"], "patient_dice_mean": best["patient_dice_mean"],
            "metric": METRIC.format(regions=", ".join(regions)), "split": split,
            "patients": len(per_patient[candidates[0]]), "overlap": overlap, "candidates": scored}


def _candidate(window: str, size, tta: str, rows: list[dict], regions) -> dict:
    return {"window": window, "window_size": list(size), "tta": tta,
            "patient_dice_mean": round(metrics.mean_patient_dice(rows), 6),
            **{f"patient_dice_{r}": round(float(np.mean([row[r] for row in rows])), 6) for r in regions}}


def format_choice(scored: list[dict], best: dict) -> str:
    lines = ["Inference window and TTA on the validation patients (mean per-patient Dice):"]
    for c in scored:
        mark = "  <- best" if c is best else ""
        lines.append(f"  window {c['window']} ({'x'.join(map(str, c['window_size']))}), TTA {c['tta']}: "
                     f"{c['patient_dice_mean']:.4f}{mark}")
    return "\n".join(lines)


def choose_and_write(model_path: str, echo: Callable[[str], None] = print, **kwargs) -> tuple[str, dict]:
    """:func:`choose` for the model, written into its run folder; returns (path, choice)."""
    choice = choose(model_path, echo=echo, **kwargs)
    return trained_run.write_inference(trained_run.find_run_dir(model_path), choice), choice


def after_training(cfg: dict, model_path: str, echo: Callable[[str], None] = print) -> dict | None:
    """The best sliding window and TTA of a just-trained model on its validation patients, into inference.json.

    What ``trainer.train`` hands to :func:`trainer.training.train_and_evaluate`
    as its ``after_training`` step.  Off with ``inference_choice.enabled=false``.
    """
    options = cfg.get("inference_choice") or {}
    if not options.get("enabled", False):
        return None
    _, choice = choose_and_write(
        model_path, echo=echo, windows=[w for w in options.get("windows", "patch,volume").split(",") if w],
        tta_modes=[t for t in options.get("tta", "none").split(",") if t])
    return choice
