"""BraTS 2026 matched lesions: predicted and true lesions matched one to one, detection beside match quality.

The 2026 evaluation (panoptica's rules): 26-connected components matched by a
Hungarian assignment on 1 - Dice, detection counts (TP/FP/FN, precision,
recall, F1) and the means over matched lesions of Dice, HD95, normalised
surface Dice and panoptic quality.  Apart from the 2023-2025 scoring
(:mod:`evaluation.lesionwise`), with which it shares only the lesion
geometry of :mod:`evaluation.components`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from evaluation.components import bounding_box, clusters, components, lesion_record, numbered, overlap_pairs, union_box
from evaluation import official
from evaluation.schemes import Scheme
from shared import metrics

# panoptica's matching cost for a pair that does not overlap (never a match).
_NO_MATCH_COST = 1.0 + 1e-6


def _pair_distances(truth: np.ndarray, pred: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """(prediction->truth, truth->prediction) surface distances of two non-empty masks."""
    return metrics.surface_distances(pred, truth, spacing)


def _match(truth_ids, n_truth, pred_ids, n_pred) -> list[tuple[int, int, int]]:
    """One-to-one matches (truth id, pred id, shared voxels): Hungarian assignment on 1 - Dice."""
    t, p, inter = overlap_pairs(truth_ids, pred_ids)
    if n_truth == 0 or n_pred == 0 or t.size == 0:
        return []
    t_sizes = np.bincount(truth_ids.ravel(), minlength=n_truth + 1)
    p_sizes = np.bincount(pred_ids.ravel(), minlength=n_pred + 1)
    cost = np.full((n_truth, n_pred), _NO_MATCH_COST)
    cost[t - 1, p - 1] = 1.0 - 2.0 * inter / (t_sizes[t] + p_sizes[p])
    shared = dict(zip(zip(t.tolist(), p.tolist()), inter.tolist()))
    rows, cols = linear_sum_assignment(cost)
    return [(r + 1, c + 1, shared[(r + 1, c + 1)]) for r, c in zip(rows, cols) if cost[r, c] < 1.0]


def _matched_part(pred: np.ndarray, truth: np.ndarray, spacing, tolerance_mm: float, reduction: str) -> list[dict]:
    """Records of one cluster's true lesions (matched or not) and unmatched predicted lesions.

    ``tolerance_mm`` None: the smallest voxel spacing of the case (panoptica's default, the official one).
    """
    tolerance_mm = min(spacing) if tolerance_mm is None else tolerance_mm
    voxel_mm3 = float(np.prod(spacing))
    (truth_ids, n_truth), (pred_ids, n_pred) = components(truth), components(pred)
    matches = _match(truth_ids, n_truth, pred_ids, n_pred)
    t_boxes, p_boxes = ndimage.find_objects(truth_ids), ndimage.find_objects(pred_ids)
    t_sizes = np.bincount(truth_ids.ravel(), minlength=n_truth + 1)
    p_sizes = np.bincount(pred_ids.ravel(), minlength=n_pred + 1)
    found = {}
    for t, p, inter in matches:
        sub = union_box([t_boxes[t - 1], p_boxes[p - 1]])
        to_truth, to_pred = _pair_distances(truth_ids[sub] == t, pred_ids[sub] == p, spacing)
        found[t] = dict(dice=2.0 * inter / (t_sizes[t] + p_sizes[p]),
                        hd95=metrics.reduce_hd95(to_truth, to_pred, reduction),
                        nsd=official.nsd(to_truth, to_pred, tolerance_mm), iou=inter / (t_sizes[t] + p_sizes[p] - inter))
    records = [lesion_record("truth", float(t_sizes[t]) * voxel_mm3, True, True, **found[t]) if t in found
               else lesion_record("truth", float(t_sizes[t]) * voxel_mm3, True, False, 0.0, float("nan"), 0.0)
               for t in range(1, n_truth + 1)]
    matched_pred = {p for _, p, _ in matches}
    records += [lesion_record("false_positive", float(p_sizes[p]) * voxel_mm3, True, False, 0.0, float("nan"), 0.0)
                for p in range(1, n_pred + 1) if p not in matched_pred]
    return records


def _detection(tp: int, n_truth: int, n_pred: int) -> dict[str, float]:
    """TP/FP/FN, precision, recall and F1 = TP / (TP + FP/2 + FN/2) (NaN where undefined, as panoptica)."""
    fp, fn = n_pred - tp, n_truth - tp
    nan = float("nan")
    if tp == 0:
        f1 = 0.0 if n_truth + n_pred else nan
    else:
        f1 = tp / (tp + 0.5 * fp + 0.5 * fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": tp / n_pred if n_pred else nan,
            "recall": tp / n_truth if n_truth else nan, "f1": f1}


def matched_scores(records: list[dict]) -> dict[str, float]:
    """Detection counts and the means over matched lesions; panoptica's rules where nothing matched:
    Dice 0, NSD 0, HD95 inf, PQ 0 when there are lesions, NaN everywhere when the region is empty in both.

    PQ is panoptica's ``pq_dsc`` (mean matched Dice x F1), the only PQ the official ``gli`` configuration
    yields; the IoU form (mean matched IoU x F1) is kept as ``pq_iou`` for readers of the panoptic-quality
    literature.
    """
    matched = [r for r in records if r["matched"]]
    n_truth = sum(1 for r in records if r["kind"] == "truth")
    detection = _detection(len(matched), n_truth, len(matched) + sum(1 for r in records if r["kind"] != "truth"))
    if matched:
        mean = {m: float(np.mean([r[m] for r in matched])) for m in ("dice", "hd95", "nsd", "iou")}
        quality = {"dice": mean["dice"], "hd95": mean["hd95"], "nsd": mean["nsd"], "pq": mean["dice"] * detection["f1"],
                   "pq_iou": mean["iou"] * detection["f1"]}
    elif records:
        quality = {"dice": 0.0, "hd95": math.inf, "nsd": 0.0, "pq": 0.0, "pq_iou": 0.0}
    else:
        quality = dict.fromkeys(("dice", "hd95", "nsd", "pq", "pq_iou"), float("nan"))
    return {**detection, **quality}


def matched_region(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0), *,
                   tolerance_mm: float | None = None, reduction: str = "pooled") -> tuple[dict[str, float], list[dict]]:
    """BraTS 2026 scores of one binary region: one-to-one matched 26-connected components.

    Returns detection (tp, fp, fn, precision, recall, f1), the means over
    matched lesions of Dice, HD95 and normalised surface Dice (tolerance: the
    smallest spacing unless given), and panoptic quality PQ = mean Dice of the
    matches x F1 (``pq_dsc``); one record per true lesion and per unmatched
    predicted lesion.
    """
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    spacing = tuple(float(s) for s in spacing)
    records = []
    for box, member in clusters(pred | truth, 0):
        records += _matched_part(pred[box] & member, truth[box] & member, spacing, tolerance_mm, reduction)
    records = numbered(records)
    return matched_scores(records), records


def matched_region_part(pred, truth, scheme: Scheme, spacing) -> list[dict]:
    """One region's 2026 records in one cluster, computed in the region's own box."""
    either = pred | truth
    if not either.any():
        return []
    box = bounding_box(either, 1)
    return _matched_part(pred[box], truth[box], spacing, scheme.nsd_tolerance_mm, scheme.lesion_hd95_reduction)
