"""BraTS scores for one patient and summaries over a cohort (numpy and scipy only).

Every number the project reports (evaluation CSVs, summaries, prediction
JSONs) comes from here, so a Dice in one report means the same thing as a Dice
in another.  The conventions follow the BraTS 2017-2020 challenges as nnU-Net
re-implements them (see :data:`CONVENTION`); the official 2023+ package differs
by dropping regions that are empty in both, so every report carries the
sentence in :data:`CONVENTION`.

Inputs are class-index volumes (0 background, class i the i-th label of the
challenge, see :mod:`shared.challenges`); what is scored is every region the
challenge defines, then every label on its own.  No TensorFlow here: the
evaluator, the predictor, the Beam job and a notebook can all import it.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from shared.challenges import SRI24_DIAGONAL_MM, Challenge
from shared.volume_ops import bounding_box, crop

# Diagonal of the 240x240x155 BraTS grid at 1 mm: the HD95 of a region that
# exists in only one of prediction and truth (the largest distance possible).
EMPTY_HD95 = SRI24_DIAGONAL_MM

# How the 95th percentile of surface distances is reduced to one number.  Both
# are in use and they differ (``pooled`` is never larger), so every report
# names the one it used.
HD95_REDUCTIONS = {
    "max_directed": "the larger of the two directed 95th percentiles of surface-to-surface distances "
                    "(MONAI, DeepMind surface-distance, the BraTS 2017-2025 evaluations)",
    "pooled": "the 95th percentile of the distances of both directions pooled together "
              "(MedPy hd95, nnU-Net's BraTS evaluation, panoptica / BraTS 2026)",
}
DEFAULT_HD95_REDUCTION = "max_directed"


def convention(hd95_reduction: str = DEFAULT_HD95_REDUCTION) -> str:
    """The sentence every whole-region report carries: empty-region rule, HD95 reduction, statistics."""
    _check_reduction(hd95_reduction)
    return (
        "BraTS 2017-2020 conventions: the challenge's regions (each a set of labels); "
        "Dice 1 and HD95 0 mm when prediction and "
        f"truth are both empty, Dice 0 and HD95 {EMPTY_HD95} mm when exactly one is empty, and "
        f"such cases are kept in every mean; HD95 ({hd95_reduction}) is "
        f"{HD95_REDUCTIONS[hd95_reduction]}, in mm (6-connected surfaces, voxel spacing "
        "aware); sensitivity is 1 when truth and prediction are both empty and 0 when only the "
        "truth is empty; specificity is 1 when the truth has no background voxel; std is the "
        "population standard deviation (ddof=0)."
    )


def _check_reduction(reduction: str) -> None:
    if reduction not in HD95_REDUCTIONS:
        raise ValueError(f"unknown HD95 reduction {reduction!r}; known: {', '.join(HD95_REDUCTIONS)}")


CONVENTION = convention(DEFAULT_HD95_REDUCTION)


def structures(challenge: Challenge) -> dict[str, tuple[int, ...]]:
    """Everything scored per patient, as class indices: the regions, then each label not already a region."""
    scored = dict(challenge.region_classes())
    for cls, key in enumerate(challenge.class_keys[1:], start=1):
        scored.setdefault(key, (cls,))
    return scored


# Surfaces are taken with 6-connectivity, as MedPy and nnU-Net do.
_SURFACE_STRUCTURE = ndimage.generate_binary_structure(3, 1)


def _as_bool(mask) -> np.ndarray:
    return np.asarray(mask).astype(bool, copy=False)


def _check_same_shape(a: np.ndarray, b: np.ndarray, what: str = "prediction and truth") -> None:
    """Refuse mismatched shapes: broadcasting would score the wrong voxels silently."""
    if a.shape != b.shape:
        raise ValueError(f"{what} differ in shape: {a.shape} vs {b.shape}")


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """True/false positives/negatives of two boolean masks of the same shape."""
    pred, truth = _as_bool(pred), _as_bool(truth)
    _check_same_shape(pred, truth)
    tp = int(np.count_nonzero(pred & truth))
    predicted, actual = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    fp, fn = predicted - tp, actual - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": truth.size - tp - fp - fn}


def _dice_of(c: dict[str, int]) -> float:
    total = 2 * c["tp"] + c["fp"] + c["fn"]
    return 1.0 if total == 0 else 2.0 * c["tp"] / total


def _sensitivity_of(c: dict[str, int]) -> float:
    positives = c["tp"] + c["fn"]
    if positives == 0:
        return 0.0 if c["fp"] else 1.0
    return c["tp"] / positives


def _specificity_of(c: dict[str, int]) -> float:
    negatives = c["tn"] + c["fp"]
    return 1.0 if negatives == 0 else c["tn"] / negatives


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice overlap 2|P∩T| / (|P|+|T|); 1.0 when both masks are empty (BraTS)."""
    return _dice_of(confusion_counts(pred, truth))


def _crop_to_union(pred: np.ndarray, truth: np.ndarray, margin: int = 1):
    """Both masks cut to the box around their union, widened by ``margin``.

    Distances between surfaces never leave that box, and the one-voxel zero
    margin keeps erosion at the box edge the same as in the full volume, so the
    result is identical while a 240x240x155 scan shrinks to the tumour's size.
    """
    box = bounding_box(pred | truth)
    box = tuple((lo - margin, hi + margin) for lo, hi in box)
    return crop(pred, box), crop(truth, box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with at least one 6-neighbour outside it."""
    eroded = ndimage.binary_erosion(mask, structure=_SURFACE_STRUCTURE, border_value=0)
    return mask ^ eroded


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0)):
    """Directed surface distances in mm: (prediction→truth, truth→prediction).

    Both masks must be non-empty.  Exposed so tests and notebooks can look at
    the whole distribution, not just its 95th percentile.
    """
    pred, truth = _crop_to_union(_as_bool(pred), _as_bool(truth))
    sampling = tuple(float(s) for s in spacing)
    surf_pred, surf_truth = _surface(pred), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~surf_truth, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=sampling)
    return to_truth[surf_pred], to_pred[surf_truth]


def reduce_hd95(pred_to_truth: np.ndarray, truth_to_pred: np.ndarray,
                reduction: str = DEFAULT_HD95_REDUCTION) -> float:
    """HD95 from the two directed distance sets (both non-empty), by ``reduction``.

    ``max_directed`` cannot hide missed tumour behind a prediction that is
    right about a small part of it; ``pooled`` weighs each surface voxel once,
    so the side with the larger surface dominates.  See :data:`HD95_REDUCTIONS`.
    """
    _check_reduction(reduction)
    if reduction == "pooled":
        return float(np.percentile(np.concatenate([pred_to_truth, truth_to_pred]), 95))
    return float(max(np.percentile(pred_to_truth, 95), np.percentile(truth_to_pred, 95)))


def hd95(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0),
         reduction: str = DEFAULT_HD95_REDUCTION) -> float:
    """95% Hausdorff distance in mm, with the BraTS values for empty masks.

    ``reduction`` picks the convention (:data:`HD95_REDUCTIONS`); the default
    is the larger of the two directed 95th percentiles, as before.
    """
    _check_reduction(reduction)
    pred, truth = _as_bool(pred), _as_bool(truth)
    _check_same_shape(pred, truth)
    has_pred, has_truth = bool(pred.any()), bool(truth.any())
    if not has_pred and not has_truth:
        return 0.0
    if has_pred != has_truth:
        return EMPTY_HD95
    return reduce_hd95(*surface_distances(pred, truth, spacing), reduction)


def sensitivity(pred: np.ndarray, truth: np.ndarray) -> float:
    """TP / (TP + FN): the share of the true tumour that was found.

    With no true tumour there is nothing to find; the score then mirrors Dice
    (1.0 if the prediction is empty too, 0.0 otherwise) so a model that invents
    tumour is not rewarded on those patients.
    """
    return _sensitivity_of(confusion_counts(pred, truth))


def specificity(pred: np.ndarray, truth: np.ndarray) -> float:
    """TN / (TN + FP): the share of the true background left unlabelled.

    A truth with no background (never the case for a brain scan) gives 1.0:
    there was no background to mislabel.
    """
    return _specificity_of(confusion_counts(pred, truth))


def voxel_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mL (1 mL = 1000 mm³)."""
    return float(np.prod([float(s) for s in spacing])) / 1000.0


def volume_ml(mask: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """Volume of a boolean mask in mL."""
    return int(np.count_nonzero(mask)) * voxel_ml(spacing)


def _check_classes(classes: np.ndarray, num_classes: int) -> None:
    """Refuse values outside 0..num_classes-1 (e.g. a source label 4 not mapped to 3)."""
    if classes.size and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise ValueError(
            f"class values must lie in 0..{num_classes - 1}, got {int(classes.min())}..{int(classes.max())}"
            " (map source labels with shared.labels.to_classes first)"
        )


def _class_counts(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Voxels per class in one pass (bincount beats one isin call per structure)."""
    classes = np.asarray(classes)
    _check_classes(classes, num_classes)
    return np.bincount(classes.ravel().astype(np.int64), minlength=num_classes)


def volumes_ml(classes: np.ndarray, challenge: Challenge, spacing=(1.0, 1.0, 1.0)) -> dict[str, float]:
    """Volume in mL of each region and label of ``challenge``."""
    counts = _class_counts(classes, challenge.num_classes)
    per_voxel = voxel_ml(spacing)
    return {name: float(counts[list(members)].sum()) * per_voxel
            for name, members in structures(challenge).items()}


def _tumour_box(pred_classes: np.ndarray, truth_classes: np.ndarray):
    """Index slices around all tumour voxels of both volumes (one voxel wider, inside the volume)."""
    tumour = (pred_classes > 0) | (truth_classes > 0)
    if not tumour.any():
        return tuple(slice(0, 0) for _ in tumour.shape)
    return tuple(slice(max(lo - 1, 0), min(hi + 1, dim))
                 for (lo, hi), dim in zip(bounding_box(tumour), tumour.shape))


def _overlap_scores(pred: np.ndarray, truth: np.ndarray, spacing, outside: int,
                    hd95_reduction: str | None = DEFAULT_HD95_REDUCTION) -> dict[str, float]:
    """Dice, HD95, sensitivity and specificity of masks cut to the tumour box.

    ``outside`` voxels beyond the box are background in both, so they only add
    true negatives.  ``hd95_reduction`` None leaves HD95 NaN (a caller that
    scores it by other rules fills it in, without paying for it twice).
    """
    counts = confusion_counts(pred, truth)
    counts["tn"] += outside
    return {
        "dice": _dice_of(counts),
        "hd95": hd95(pred, truth, spacing, hd95_reduction) if hd95_reduction else float("nan"),
        "sensitivity": _sensitivity_of(counts),
        "specificity": _specificity_of(counts),
    }


def score_patient(pred_classes: np.ndarray, truth_classes: np.ndarray, challenge: Challenge,
                  spacing=(1.0, 1.0, 1.0), hd95_reduction: str | None = DEFAULT_HD95_REDUCTION) -> dict[str, float]:
    """Every per-patient number, as one flat dict (one CSV row).

    For each structure S of :func:`structures` (the challenge's regions, then
    its labels): ``dice_S``, ``hd95_S``, ``sensitivity_S``, ``specificity_S``,
    ``volume_pred_S_ml``, ``volume_truth_S_ml``.  Structures with the same
    voxels are scored once.  Everything
    is computed inside the box around the tumour voxels of both volumes (a
    full scan takes ~10x longer and gives the same numbers).  ``hd95_reduction``
    is the scheme's (:data:`HD95_REDUCTIONS`); the default keeps the numbers
    this project always reported; None leaves ``hd95_S`` NaN for the caller to fill.
    """
    pred_classes, truth_classes = np.asarray(pred_classes), np.asarray(truth_classes)
    _check_same_shape(pred_classes, truth_classes, "predicted and true class volumes")
    if len(tuple(spacing)) != pred_classes.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a volume of shape {pred_classes.shape}")
    _check_classes(pred_classes, challenge.num_classes)
    _check_classes(truth_classes, challenge.num_classes)
    if hd95_reduction is not None:
        _check_reduction(hd95_reduction)
    box = _tumour_box(pred_classes, truth_classes)
    pred_box, truth_box = pred_classes[box], truth_classes[box]
    outside = pred_classes.size - pred_box.size
    pred_volumes = volumes_ml(pred_box, challenge, spacing)
    truth_volumes = volumes_ml(truth_box, challenge, spacing)
    done: dict[tuple[int, ...], dict[str, float]] = {}
    row: dict[str, float] = {}
    for name, members in structures(challenge).items():
        if members not in done:
            done[members] = _overlap_scores(
                np.isin(pred_box, members), np.isin(truth_box, members), spacing, outside, hd95_reduction
            )
        row.update({f"{metric}_{name}": value for metric, value in done[members].items()})
        row[f"volume_pred_{name}_ml"] = pred_volumes[name]
        row[f"volume_truth_{name}_ml"] = truth_volumes[name]
    return row


def ranked_regions(challenge: Challenge) -> tuple[str, ...]:
    """The regions a model is ranked by: WT, TC and ET where the challenge has them, else all its regions.

    Training's ``dice_mean``, the best checkpoint and the choice of inference
    window all average over these, so they rank models the same way.
    """
    regions = tuple(challenge.region_classes())
    return tuple(r for r in regions if r in ("WT", "TC", "ET")) or regions


def region_dice(pred_classes: np.ndarray, truth_classes: np.ndarray, challenge: Challenge,
                regions: Sequence[str] | None = None) -> dict[str, float]:
    """Dice of each region (default: :func:`ranked_regions`), BraTS empty-region rule; no HD95 (cheap)."""
    members = challenge.region_classes()
    return {r: dice(np.isin(pred_classes, members[r]), np.isin(truth_classes, members[r]))
            for r in (regions or ranked_regions(challenge))}


def mean_patient_dice(per_patient: Sequence[dict[str, float]]) -> float:
    """The mean over patients of each patient's mean Dice over its regions (BraTS ranks by per-patient means).

    Not the Dice of all voxels pooled: a large tumour would outweigh a small
    one, and a patient without enhancing tumour would barely count.
    """
    if not per_patient:
        raise ValueError("no patient to average")
    return float(np.mean([np.mean(list(row.values())) for row in per_patient]))


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _numeric_columns(rows: Iterable[dict], id_key: str) -> list[str]:
    """Numeric columns in order of first appearance (the CSV's order)."""
    columns: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if key != id_key and _is_number(value):
                columns.setdefault(key, None)
    return list(columns)


def describe(values: Sequence[float]) -> dict[str, float]:
    """mean, std (ddof=0), median, q1, q3, min, max and n of the finite values, and what was left out.

    NaN (undefined: a region empty in both under brats2026, a metric a patient
    could not be scored on) and infinities (a 2026 HD95 with nothing matched)
    are left out of every statistic, not hidden: ``n_nan`` and ``n_inf`` count
    them and ``treatment`` says so in words, so a mean over 17 of 19 patients
    reads as such.  ``mean_with_inf`` is the mean a tool that keeps
    infinities reports (inf when any value is +inf, as the official parser's
    pandas mean).
    """
    array = np.asarray([float(v) for v in values], dtype=np.float64)
    n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    finite = array[np.isfinite(array)]
    left_out = {"n_nan": n_nan, "n_inf": n_inf, "treatment": _treatment(finite.size, n_nan, n_inf),
                "mean_with_inf": _mean_with_inf(array)}
    if finite.size == 0:
        nan = float("nan")
        return {"mean": nan, "std": nan, "median": nan, "q1": nan, "q3": nan, "min": nan, "max": nan, "n": 0,
                **left_out}
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "median": float(median),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "n": int(finite.size),
        **left_out,
    }


def _treatment(n: int, n_nan: int, n_inf: int) -> str:
    if not n_nan and not n_inf:
        return f"all {n} values finite"
    parts = [f"{n_inf} infinite" if n_inf else "", f"{n_nan} NaN" if n_nan else ""]
    return f"over the {n} finite values of {n + n_nan + n_inf}; left out: " + ", ".join(p for p in parts if p)


def _mean_with_inf(array: np.ndarray) -> float:
    kept = array[~np.isnan(array)]
    if kept.size == 0:
        return float("nan")
    with np.errstate(invalid="ignore"):
        return float(kept.mean())


def _extremes(rows: list[dict], column: str, id_key: str) -> tuple[dict, dict] | None:
    """(best, worst) rows by ``column`` as {"id", "dice"}; first one wins ties."""
    scored = [(row.get(id_key), float(row[column])) for row in rows
              if _is_number(row.get(column)) and math.isfinite(float(row[column]))]
    if not scored:
        return None
    best = max(scored, key=lambda item: item[1])
    worst = min(scored, key=lambda item: item[1])
    return {"id": best[0], "dice": best[1]}, {"id": worst[0], "dice": worst[1]}


def summarize(rows: list[dict], regions: Sequence[str], id_key: str = "patient",
              convention_text: str = CONVENTION) -> dict:
    """Cohort summary of per-patient rows (e.g. from :func:`score_patient`).

    Returns ``{"convention", "n", "metrics": {column: describe(...)},
    "best": {region: {"id", "dice"}}, "worst": {region: {"id", "dice"}}}``;
    best and worst are by ``dice_<region>`` for each of ``regions`` (the
    challenge's), so the cases worth looking at are named in the report.
    ``convention_text`` is the sentence of the scheme the rows were scored under.
    """
    rows = list(rows)
    summary: dict = {
        "convention": convention_text,
        "n": len(rows),
        "regions": list(regions),
        "metrics": {column: describe([row[column] for row in rows if _is_number(row.get(column))])
                    for column in _numeric_columns(rows, id_key)},
        "best": {},
        "worst": {},
    }
    for region in regions:
        found = _extremes(rows, f"dice_{region}", id_key)
        if found:
            summary["best"][region], summary["worst"][region] = found
    return summary


def _mean_std(stats: dict | None, digits: int) -> str:
    if not stats or stats["n"] == 0:
        return "-"
    return f"{stats['mean']:.{digits}f}±{stats['std']:.{digits}f}"


def _median(stats: dict | None, digits: int) -> str:
    if not stats or stats["n"] == 0:
        return "-"
    return f"{stats['median']:.{digits}f}"


def _who(entry: dict | None) -> str:
    return "-" if not entry else f"{entry['id']} ({entry['dice']:.3f})"


def left_out_lines(summary: dict) -> list[str]:
    """One line per column whose mean left values out (infinite or NaN), saying how many."""
    return [f"{column}: mean {stats['treatment']}"
            for column, stats in summary.get("metrics", {}).items() if stats.get("n_nan") or stats.get("n_inf")]


def format_table(summary: dict) -> str:
    """The summary as a fixed-width text table, one row per region, plus the convention."""
    metrics = summary.get("metrics", {})
    header = ("region", "Dice mean±std", "Dice median", "HD95 mm mean±std", "HD95 median", "best (Dice)", "worst (Dice)")
    lines = [header]
    for region in summary.get("regions", ()):
        d, h = metrics.get(f"dice_{region}"), metrics.get(f"hd95_{region}")
        lines.append((region, _mean_std(d, 3), _median(d, 3), _mean_std(h, 2), _median(h, 2),
                      _who(summary.get("best", {}).get(region)), _who(summary.get("worst", {}).get(region))))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    text.append(f"n = {summary.get('n', 0)} patients")
    text += left_out_lines(summary)
    text.append(f"Conventions: {summary.get('convention', CONVENTION)}")
    return "\n".join(text)
