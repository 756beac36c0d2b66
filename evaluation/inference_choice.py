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

At a fraction of the cost of every window x every TTA on every patient
(322 s after 10 minutes of training on 2 cores, issue 23): the windows are
compared without TTA, TTA is tried on the best window only, the identity
pass of TTA reuses the no-TTA predictions, and at most ``max_patients``
validation patients (the first in manifest order) are scored.

Each candidate's predictions also choose the connected-component
post-processing and nnU-Net's small-ET rule (:func:`shared.postprocessing.choose`,
cheap next to inference), and candidates are ranked by the Dice after their
rules, as they will be served: a window that leaves specks can win once
they are removed.  The winner's rules become the run's
``postprocessing.json``, which prediction applies by default.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from shared import metrics, postprocessing, trained_run
from shared.trained_run import TrainedRun
from evaluation import scoring
from serving import inference, prediction, predictor as predictor_lib

WINDOWS = ("patch", "volume")
TTA_MODES = ("none", "all")
PREDICTION_TTA_FIELD = "inference_choice.prediction_tta"
MAX_PATIENTS = 4  # validation patients scored: enough to rank windows, and the cost stays a share of training
METRIC = "mean over validation patients of each patient's mean Dice over {regions} (cropped grid)"
_REUSE_BUDGET_BYTES = 1 << 30  # identity-pass predictions kept for the TTA pass


def _windows(predictor: predictor_lib.Predictor, run: TrainedRun, windows: Sequence[str]) -> dict[str, tuple]:
    """Window name -> size; a window the same size as an earlier one is left out (patch = crop)."""
    sizes: dict[str, tuple] = {}
    for name in windows:
        size = predictor_lib.window_size(name, run.patch_size, predictor.preprocess_cfg)
        if size not in sizes.values():
            sizes[name] = size
    return sizes


class _Reuse:
    """A predict function whose TTA identity passes replay what the no-TTA pass computed.

    ``sliding_window`` calls the model on the same batches in the same
    order whatever the TTA, and every TTA mode's first pass is the identity
    (``inference.flip_sets``): with ``flips`` passes per batch, call i is an
    identity pass when i % flips == 0.  Recorded outputs beyond the budget
    are simply recomputed.
    """

    def __init__(self, predict):
        self.predict, self.saved, self.size, self.flips, self.calls = predict, [], 0, 0, 0

    def replay(self, flips: int) -> "_Reuse":
        self.flips, self.calls = flips, 0
        return self

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        index, self.calls = self.calls, self.calls + 1
        if self.flips:
            saved = self.saved[index // self.flips] if index % self.flips == 0 and index // self.flips < len(
                self.saved) else None
            if saved is not None and saved[0] == batch.shape:
                return saved[1]
            return np.asarray(self.predict(batch), dtype=np.float32)
        out = np.asarray(self.predict(batch), dtype=np.float32)
        if self.size + out.nbytes <= _REUSE_BUDGET_BYTES:
            self.saved.append((batch.shape, out))
            self.size += out.nbytes
        else:
            self.saved.append(None)
        return out


def _labelled_records(predictor, run: TrainedRun, max_patients: int) -> list:
    split, patients = run.validation()
    chosen = []
    for record in scoring.records_of_split(predictor.data_dir, split, patients):
        if record.mask.shape[-1] and len(chosen) < max_patients:
            chosen.append(record)
    return chosen


def choose(model_path: str, windows: Sequence[str] = WINDOWS, tta_modes: Sequence[str] = TTA_MODES,
           overlap: float = 0.5, data_dir: str | None = None, echo: Callable[[str], None] = print,
           max_patients: int = MAX_PATIENTS, postprocess: bool = True, prediction_tta: str | None = None
           ) -> tuple[dict, postprocessing.Choice | None]:
    """Score windows without TTA, then TTA on the best window: (the record
    :func:`shared.trained_run.write_inference` saves, the post-processing chosen on the best candidate's
    predictions when ``postprocess``; the record holds it too, under ``postprocessing``).  FileNotFoundError
    when the run has no lineage.json or validation patients, or its dataset
    is not reachable.

    ``prediction_tta``: the TTA mode recorded for prediction whatever was scored (``tta_set_by`` says
    so), for a recipe that cannot afford to score TTA's passes yet predicts with them, as nnU-Net always
    mirrors; the post-processing stays the one chosen on the scored, unmirrored predictions.
    """
    run = trained_run.run_of_model(model_path)
    if run is None:
        raise FileNotFoundError(f"no {trained_run.LINEAGE_FILE} beside {model_path}: not a training run")
    predictor = predictor_lib.load_predictor(model_path, data_dir, postprocessing="none")
    if predictor.data_dir is None:
        raise FileNotFoundError(f"the dataset {model_path} was trained on is not reachable: pass its directory")
    start = time.perf_counter()
    records = _labelled_records(predictor, run, max(1, int(max_patients)))
    if not records:
        raise FileNotFoundError(f"{model_path}'s run has no labelled validation patients to choose on")
    sizes = _windows(predictor, run, windows)
    regions = metrics.ranked_regions(predictor.challenge)
    truths = [np.argmax(r.mask, axis=-1).astype(np.uint8) for r in records]
    images = [r.image.astype(np.float32) for r in records]
    reuse = {(w, i): _Reuse(predictor.predict_fn()) for w in sizes for i in range(len(records))}

    def run_candidate(window: str, tta: str) -> tuple[dict, postprocessing.Choice | None]:
        flips = len(inference.flip_sets(tta))
        began = time.perf_counter()
        preds = []
        for i, image in enumerate(images):
            fn = reuse[(window, i)]
            fn = fn.replay(flips) if tta_modes[0] == "none" and tta != "none" else fn
            probs = inference.sliding_window(fn, image, sizes[window], overlap=overlap, tta=tta)
            preds.append(prediction.classes_of(predictor, probs))
        rows = [metrics.region_dice(p, t, predictor.challenge, regions) for p, t in zip(preds, truths)]
        scored, picked = _candidate(window, sizes[window], tta, rows, regions), None
        if postprocess:  # ranked as it will be served: after the rules chosen for this candidate
            picked = postprocessing.choose(list(zip(preds, truths)), predictor.challenge)
            scored.update(postprocessing=picked.rules, rank=round(picked.mean_dice_after, 6))
        echo(f"  scored window {window} ({predictor_lib.window_text(sizes[window])}), TTA {tta} on "
             f"{len(images)} patient(s): {scored['patient_dice_mean']:.4f} ({time.perf_counter() - began:.1f} s)")
        return scored, picked

    def rank(result) -> float:
        return result[0].get("rank", result[0]["patient_dice_mean"])

    echo(f"Choosing the inference window and TTA on {len(records)} validation patient(s) "
         f"({len(sizes)} window(s), then TTA {', '.join(tta_modes[1:]) or 'none'} on the best) ...")
    results = [run_candidate(window, tta_modes[0]) for window in sizes]
    window = max(results, key=rank)[0]["window"]
    if tta_modes[0] == "none":
        for key in [k for k in reuse if k[0] != window]:
            reuse.pop(key)  # only the best window's identity passes are replayed
    results += [run_candidate(window, tta) for tta in tta_modes[1:]]
    scored = [r[0] for r in results]
    best, picked = max(results, key=rank)  # the first of equals: the cheaper
    seconds = time.perf_counter() - start
    echo(format_choice(scored, best) + f" ({seconds:.1f} s on {len(records)} patient(s))")
    choice = {"window": best["window"], "tta": best["tta"], "patient_dice_mean": best["patient_dice_mean"],
              "metric": METRIC.format(regions=", ".join(regions)), "split": run.validation()[0],
              "patients": len(records), "overlap": overlap, "candidates": scored, "seconds": round(seconds, 2)}
    if postprocess:
        choice["postprocessing"] = picked.to_json()
        echo(f"Post-processing with it: {', '.join(str(r) for r in picked.rules) or 'none'} (mean Dice "
             f"{picked.mean_dice_before:.4f} -> {picked.mean_dice_after:.4f})")
    if prediction_tta and prediction_tta != choice["tta"]:
        choice.update(tta=prediction_tta, tta_set_by=PREDICTION_TTA_FIELD)
        echo(f"Prediction uses TTA {prediction_tta}: set by the config's {PREDICTION_TTA_FIELD}, not scored "
             f"here (the scores above are TTA {best['tta']})")
    return choice, picked


def _candidate(window: str, size, tta: str, rows: list[dict], regions) -> dict:
    return {"window": window, "window_size": list(size), "tta": tta,
            "patient_dice_mean": round(metrics.mean_patient_dice(rows), 6),
            **{f"patient_dice_{r}": round(float(np.mean([row[r] for row in rows])), 6) for r in regions}}


def format_choice(scored: list[dict], best: dict) -> str:
    lines = ["Inference window and TTA on the validation patients (mean per-patient Dice):"]
    for c in scored:
        mark = "  <- best" if c is best else ""
        after = f", {c['rank']:.4f} post-processed" if "rank" in c else ""
        lines.append(f"  window {c['window']} ({predictor_lib.window_text(c['window_size'])}), TTA {c['tta']}: "
                     f"{c['patient_dice_mean']:.4f}{after}{mark}")
    return "\n".join(lines)


def choose_and_write(model_path: str, echo: Callable[[str], None] = print, **kwargs) -> tuple[str, dict]:
    """:func:`choose` for the model, written into its run folder (with its post-processing); returns (path, choice)."""
    choice, picked = choose(model_path, echo=echo, **kwargs)
    run_dir = trained_run.find_run_dir(model_path)
    if picked is not None:
        trained_run.write_postprocessing(run_dir, picked)
    return trained_run.write_inference(run_dir, choice), choice


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
        tta_modes=_tta_candidates(options), max_patients=int(options.get("max_patients", MAX_PATIENTS)),
        postprocess=bool(options.get("postprocessing", True)), prediction_tta=options.get("prediction_tta") or None)
    return choice


def _tta_candidates(options) -> list[str]:
    return [t for t in str(options.get("tta", "none")).split(",") if t]


def check_options(cfg) -> None:
    """ValueError naming the ``inference_choice`` field whose TTA mode does not exist; called before training,
    so a typo costs seconds rather than a training run."""
    options = cfg.get("inference_choice") or {}
    prediction = [options.get("prediction_tta") or "none"]
    for field, modes in (("tta", _tta_candidates(options)), ("prediction_tta", prediction)):
        unknown = [m for m in modes if m not in inference.TTA_MODES]
        if unknown:
            raise ValueError(f"inference_choice.{field}: unknown TTA mode(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(inference.TTA_MODES)}")
