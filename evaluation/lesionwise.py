"""BraTS 2023-2025 lesion-wise scores: each true lesion scored on its own, every miss and false positive charged.

The ranking metrics of the 2023-2025 challenges (lesion-wise Dice and HD95),
split from the per-patient entry (:func:`evaluation.lesions.score_lesions`)
so the rules of one scoring read in one place: predicted lesions (2023
components, 2024 dilation-merged and thresholded), hits on a true lesion's
dilated zone, the penalty for misses and false positives, and the
region-by-region scoring of one cluster with the 2024 cross-tissue joins
(:class:`LesionwiseCluster`).  The lesions themselves come from
:mod:`evaluation.components`.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from evaluation import surface as surface_lib
from evaluation.components import (Tissue, class_table, bounding_box, clusters, components, join_groups, lesion_record,
                                   merge_by_dilation, numbered, overlap_pairs, touching_pairs, union_box)
from evaluation.schemes import Scheme
from shared.challenges import Challenge, LesionRule

def _volume(count, spacing) -> float:
    """``count`` voxels in mm³, multiplied as the reference does (``n * sx * sy * sz``)."""
    s0, s1, s2 = spacing
    return float(count) * s0 * s1 * s2


def _predicted_lesions(pred: np.ndarray, rule: LesionRule, merge: bool, spacing,
                       unit: str = "voxels") -> np.ndarray:
    """Predicted lesion ids: components (2023), or dilation-merged lesions above the threshold (2024).

    The 2024 code drops a predicted lesion of ``count`` voxels when ``count <= threshold``
    (``unit`` voxels: every task but MEN-RT) or ``count <= threshold / (sx * sy * sz)``
    (``unit`` mm3: MEN-RT).
    """
    if not merge:
        return components(pred)[0]
    ids, _, n = merge_by_dilation(pred, rule.dilation)
    counts = np.bincount(ids.ravel(), minlength=n + 1)
    limit = rule.min_volume_mm3 if unit == "voxels" else rule.min_volume_mm3 / (spacing[0] * spacing[1] * spacing[2])
    small = np.flatnonzero(counts <= limit)
    small = small[small > 0]
    if small.size:
        ids = np.where(np.isin(ids, small), 0, ids)
    return ids


def _hit_score(truth_k: np.ndarray, pred_k: np.ndarray, spacing, hd95) -> tuple[float, float]:
    """Dice and HD95 of one true lesion against the union of the predicted lesions that hit it."""
    inter = int(np.count_nonzero(truth_k & pred_k))
    dice = 2.0 * inter / (int(np.count_nonzero(truth_k)) + int(np.count_nonzero(pred_k)))
    return dice, hd95(pred_k, truth_k, spacing)


def _scored_records(truth_ids: np.ndarray, zones: np.ndarray, n_truth: int, pred_ids: np.ndarray,
                    rule: LesionRule, penalty: float, spacing, hd95) -> list[dict]:
    """Records of the true lesions (ids 1..n_truth, dilated ``zones``) and false positives of one box."""
    zone_of, hit_by, _ = overlap_pairs(zones, pred_ids)
    truth_boxes, pred_boxes = ndimage.find_objects(truth_ids, n_truth), ndimage.find_objects(pred_ids)
    truth_sizes = np.bincount(truth_ids.ravel(), minlength=n_truth + 1)
    records = []
    for k in range(1, n_truth + 1):
        hits = hit_by[zone_of == k]
        volume = _volume(truth_sizes[k], spacing)
        if hits.size:
            sub = union_box([truth_boxes[k - 1]] + [pred_boxes[h - 1] for h in hits])
            dice, hd = _hit_score(truth_ids[sub] == k, np.isin(pred_ids[sub], hits), spacing, hd95)
        else:
            dice, hd = 0.0, float(penalty)
        records.append(lesion_record("truth", volume, volume > rule.min_volume_mm3, bool(hits.size), dice, hd))
    hit = set(hit_by.tolist())
    pred_sizes = np.bincount(pred_ids.ravel(), minlength=len(pred_boxes) + 1)
    records += [lesion_record("false_positive", _volume(pred_sizes[p], spacing), True, False, 0.0, float(penalty))
                for p in range(1, len(pred_boxes) + 1) if pred_boxes[p - 1] is not None and p not in hit]
    return records


def _lesionwise_part(pred: np.ndarray, truth: np.ndarray, rule: LesionRule, penalty: float, spacing,
                     merge: bool, hd95, unit: str = "voxels") -> list[dict]:
    """Records of the true lesions and false positives of one cluster (see :func:`lesionwise_region`)."""
    truth_ids, zones, n_truth = merge_by_dilation(truth, rule.dilation)
    pred_ids = _predicted_lesions(pred, rule, merge, spacing, unit)
    return _scored_records(truth_ids, zones, n_truth, pred_ids, rule, penalty, spacing, hd95)


def lesionwise_scores(records: list[dict], penalty: float) -> dict[str, float]:
    """Dice = sum / (lesions + FP); HD95 = (sum + FP x penalty) / (lesions + FP); 1 and 0 when nothing is there.

    Lesions at or below the threshold (``counted`` False) drop out of sums and counts.
    """
    kept = [r for r in records if r["kind"] == "truth" and r["counted"]]
    n_fp = sum(1 for r in records if r["kind"] == "false_positive")
    n = len(kept) + n_fp
    if n == 0:
        return {"dice": 1.0, "hd95": 0.0, "tp": 0, "fp": 0, "fn": 0}
    tp = sum(1 for r in kept if r["matched"])
    return {"dice": sum(r["dice"] for r in kept) / n,
            "hd95": (sum(r["hd95"] for r in kept) + n_fp * float(penalty)) / n,
            "tp": tp, "fp": n_fp, "fn": len(kept) - tp}


def lesionwise_region(pred: np.ndarray, truth: np.ndarray, rule: LesionRule, penalty: float,
                      spacing=(1.0, 1.0, 1.0), *, merge_predictions: bool = False,
                      reduction: str = "max_directed", surface: str = "surfel",
                      prediction_unit: str = "voxels") -> tuple[dict[str, float], list[dict]]:
    """BraTS 2023 (``merge_predictions=False``) or 2024-2025 lesion-wise scores of one binary region.

    True components closer than ``rule.dilation`` dilations form one lesion;
    every predicted lesion that reaches a true lesion's dilated zone is a hit,
    and the union of its hits is scored against it.  Returns the patient's
    scores ``{"dice", "hd95", "tp", "fp", "fn"}`` and one record per true
    lesion and per false positive.  HD95 by default as the reference code
    (``surface="surfel"``: DeepMind's area-weighted surface elements); the
    2024 threshold on predictions counts ``prediction_unit`` (voxels, or mm3
    as for MEN-RT).  One region alone: no cross-tissue joining (see
    :func:`evaluation.lesions.score_lesions`).
    """
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    spacing = tuple(float(s) for s in spacing)
    hd95 = functools.partial(surface_lib.hd95, surface=surface, reduction=reduction)
    records = []
    for box, member in clusters(pred | truth, rule.dilation):
        records += _lesionwise_part(pred[box] & member, truth[box] & member, rule, penalty, spacing,
                                    merge_predictions, hd95, prediction_unit)
    records = numbered(records)
    return lesionwise_scores(records, penalty), records


class LesionwiseCluster:
    """The 2023-2025 lesion-wise records of one cluster, region by region.

    Each tissue's lesions are found once, in the tissue's own box (often far
    smaller than the cluster: the enhancing rim, the core), and serve both to
    score the tissue and as a partner in another tissue's joins.
    """

    def __init__(self, pred_part, truth_part, challenge: Challenge, scheme: Scheme, spacing, shape, tables):
        self.parts = {"pred": pred_part, "truth": truth_part}
        self.challenge, self.scheme, self.spacing, self.tables = challenge, scheme, spacing, tables
        self.penalty = challenge.lesion_penalty(shape)
        self.merge = scheme.lesion_method == "brats2024"
        self.hd95 = functools.partial(surface_lib.hd95, surface=scheme.lesion_surface,
                                      reduction=scheme.lesion_hd95_reduction)
        self.joins = {join.region: join for join in challenge.lesion_joins} if self.merge else {}
        self._found: dict[tuple[str, str], Tissue | None] = {}

    def _mask(self, key: str, which: str) -> np.ndarray:
        table = self.tables.get(key)
        if table is None:  # a partner tissue that is not a scored region: its label's class
            table = class_table((self.challenge.class_of(self.challenge.label(key).value),), self.challenge.num_classes)
        return table[self.parts[which]]

    def _box_of(self, key: str) -> tuple[slice, ...] | None:
        either = self._mask(key, "pred") | self._mask(key, "truth")
        if not either.any():
            return None
        return bounding_box(either, self.challenge.tissue_lesion_rule(key).dilation + 1)

    def tissue(self, key: str, which: str) -> Tissue | None:
        """Lesions of ``key`` in the truth or the prediction (merged by dilation; predictions
        thresholded under 2024), before any joining; None when the tissue is absent."""
        if (key, which) not in self._found:
            box, found = self._box_of(key), None
            if box is not None:
                mask, rule = self._mask(key, which)[box], self.challenge.tissue_lesion_rule(key)
                if which == "truth":
                    ids, zones, n = merge_by_dilation(mask, rule.dilation)
                    found = Tissue(box, ids, zones, n)
                else:
                    ids = _predicted_lesions(mask, rule, self.merge, self.spacing,
                                             self.challenge.lesion_prediction_unit)
                    found = Tissue(box, ids, None, int(ids.max(initial=0)))
            self._found[(key, which)] = found
        return self._found[(key, which)]

    def _joined(self, region: str, which: str) -> Tissue:
        found = self.tissue(region, which)
        join = self.joins.get(region)
        if join is None or found.n == 0:
            return found
        pairs = [touching_pairs(found, partner) for key in join.partners
                 if (partner := self.tissue(key, which)) is not None]
        group = join_groups(found.n, pairs)
        zones = None if found.zones is None else group[found.zones]
        return Tissue(found.box, group[found.ids], zones, int(group.max(initial=0)))

    def records(self, region: str) -> list[dict]:
        if self.tissue(region, "truth") is None:
            return []
        truth, pred = self._joined(region, "truth"), self._joined(region, "pred")
        return _scored_records(truth.ids, truth.zones, truth.n, pred.ids, self.challenge.lesion_rules[region],
                               self.penalty, self.spacing, self.hd95)
