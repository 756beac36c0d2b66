"""Lesion-wise BraTS scores: the 2023-2025 ranking metrics and the 2026 matched lesions.

Whole-region Dice hides what matters for metastases and multifocal gliomas: a
model that finds the big lesion and misses three small ones still scores 0.95.
Since 2023 BraTS ranks by *lesion-wise* Dice and HD95, which score each true
lesion on its own and charge every miss and every false positive; the 2026
evaluation instead matches predicted and true lesions one to one and reports
detection (TP/FP/FN, F1) beside the quality of the matches.  This module
computes either, per region, for one patient (:func:`score_lesions`, and the
web app's :func:`lesion_table`) and formats the tables; the scorings live in
:mod:`evaluation.lesionwise` (2023-2025) and :mod:`evaluation.matching` (2026),
the lesions they score in :mod:`evaluation.components`.  The rules are those
of :mod:`evaluation.schemes`, the parameters (dilation, volume threshold,
penalty) the challenge's (:mod:`shared.challenges`).

Our own implementation of the published rules, checked against the reference
code (rachitsaluja/BraTS-2023-Metrics, BraTS-2024-Metrics, BrainLesion/panoptica)
and reproducing it, as the 2023-2025 challenges compute their scores:

* per-lesion HD95 on DeepMind's area-weighted surface elements with its
  non-interpolated 95th percentile (:mod:`evaluation.surface`, the scheme's
  ``lesion_surface``); the 2026 matched scheme keeps panoptica's surface voxels,
  its NSD tolerance (the case's smallest spacing) and its PQ (``pq_dsc``),
  checked against the official package in tests/evaluation/test_official.py;
* 2024 predicted lesions dropped at or below the threshold counted in voxels
  for every task but MEN-RT (mm³ there: ``lesion_prediction_unit``); true
  lesions always in mm³;
* the 2024 cross-tissue joining (``Challenge.lesion_joins``, :func:`evaluation.components.join_groups`):
  GLI NETC, ET, RC and SNFH lesions, MET and SSA ET lesions, that touch the
  same lowest-numbered lesion of a partner tissue become one lesion.

Known differences: none in the scores.  Per-lesion records are numbered in
our own order (true lesions, then false positives, cluster by cluster), not
the reference's label values; the 2023 reference's "Legacy" whole-region
HD95 and its normalised surface Dice are not part of this module.  GoAT has
no task file in BraTS-2024-Metrics: it gets the 2024 procedure without
joining.  Assumed, not checked against a run of the reference: cc3d numbers
the dilated masks (C-ordered, as ``binary_dilation`` returns them) in C raster
order like ``ndimage.label``; and the reference reads float32 header zooms,
so a lesion exactly at a threshold in mm³ may round the other way.

Speed: the tumour is split into independent clusters
(:func:`evaluation.components.clusters`), each region is scored inside its
own box within a cluster, components come from one
``scipy.ndimage.label`` pass, hits from one ``np.unique`` over voxel pairs,
touching lesions of two tissues from one dilation of their common window, and
distances from distance transforms on the box of each lesion; a 240x240x155
patient takes under a second of CPU where the reference code, which dilates
the full volume once per lesion, takes many seconds (BUILD_NOTES.md).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from evaluation import schemes
from evaluation.components import class_table, clusters, numbered
from evaluation.lesionwise import LesionwiseCluster, lesionwise_scores
from evaluation.matching import matched_region_part, matched_scores
from evaluation.schemes import Scheme
from shared.challenges import Challenge

LESION_COLUMNS = ("patient", "region", "lesion", "kind", "volume_mm3", "counted", "matched", "dice", "hd95", "nsd")


@dataclasses.dataclass
class RegionLesions:
    """One region of one patient: its per-patient scores and one record per lesion."""

    region: str
    scores: dict[str, float]  # dice, hd95, tp, fp, fn (+ precision, recall, f1, nsd, pq when matched)
    lesions: list[dict]  # LESION_COLUMNS without patient


@dataclasses.dataclass
class PatientLesions:
    """Every lesion-scored region of one patient, under one scheme."""

    scheme: str
    regions: list[RegionLesions]

    def row(self) -> dict[str, float]:
        """Flat per-patient columns ``lesion_<metric>_<region>`` (one CSV row's worth)."""
        return {f"lesion_{metric}_{r.region}": value for r in self.regions for metric, value in r.scores.items()}

    def lesion_rows(self, patient: str) -> list[dict]:
        """Per-lesion records with the patient id first (the per-lesion CSV)."""
        return [{"patient": patient, "region": r.region, **lesion} for r in self.regions for lesion in r.lesions]


# -- one patient --------------------------------------------------------------

def _scored_regions(challenge: Challenge, scheme: Scheme) -> dict[str, tuple[int, ...]]:
    """Regions the scheme scores: those with lesion rules (2023-2025), every region (2026)."""
    regions = challenge.region_classes()
    if scheme.lesion_method == "matched":
        return regions
    return {name: classes for name, classes in regions.items() if name in challenge.lesion_rules}


def _reach(challenge: Challenge, scheme: Scheme) -> int:
    if scheme.lesion_method == "matched":
        return 0
    dilations = [rule.dilation for rule in challenge.lesion_rules.values()]
    dilations += [join.partner_rule.dilation for join in challenge.lesion_joins if join.partner_rule]
    return max(dilations, default=0)


def score_lesions(pred_classes: np.ndarray, truth_classes: np.ndarray, challenge: Challenge,
                  spacing=(1.0, 1.0, 1.0), scheme: Scheme | str | None = None) -> PatientLesions:
    """Lesion-wise scores of one patient, every region of ``challenge``, under ``scheme``.

    ``pred_classes`` and ``truth_classes`` are class-index volumes (as for
    :func:`shared.metrics.score_patient`); ``spacing`` is the file's voxel size
    in the array's own axis order.  ``scheme`` defaults to the challenge's own
    (:func:`evaluation.schemes.default_for`); a scheme without lesions scores none.
    The tumour is split once into independent clusters (:func:`evaluation.components.clusters`) and
    every region is scored cluster by cluster; under ``brats2024`` the
    challenge's cross-tissue joins (:class:`shared.challenges.LesionJoin`)
    group the lesions of the tissues they name first.
    """
    scheme = scheme if isinstance(scheme, Scheme) else schemes.resolve(challenge, scheme)
    pred_classes, truth_classes = np.asarray(pred_classes), np.asarray(truth_classes)
    if pred_classes.shape != truth_classes.shape:
        raise ValueError(f"predicted and true class volumes differ in shape: {pred_classes.shape} vs "
                         f"{truth_classes.shape}")
    if len(tuple(spacing)) != pred_classes.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a volume of shape {pred_classes.shape}")
    if not scheme.lesionwise:
        return PatientLesions(scheme.name, [])
    spacing = tuple(float(s) for s in spacing)
    regions = _scored_regions(challenge, scheme)
    tables = {region: class_table(classes, challenge.num_classes) for region, classes in regions.items()}
    records: dict[str, list[dict]] = {region: [] for region in regions}
    for box, member in clusters((pred_classes > 0) | (truth_classes > 0), _reach(challenge, scheme)):
        pred_part, truth_part = pred_classes[box] * member, truth_classes[box] * member
        if scheme.lesion_method == "matched":
            for region in regions:
                records[region] += matched_region_part(tables[region][pred_part], tables[region][truth_part],
                                                        scheme, spacing)
            continue
        cluster = LesionwiseCluster(pred_part, truth_part, challenge, scheme, spacing, pred_classes.shape, tables)
        for region in regions:
            records[region] += cluster.records(region)
    return PatientLesions(scheme.name, [_region_result(region, numbered(found), challenge, scheme,
                                                       pred_classes.shape) for region, found in records.items()])


def _region_result(region: str, records: list[dict], challenge: Challenge, scheme: Scheme, shape) -> RegionLesions:
    if scheme.lesion_method == "matched":
        return RegionLesions(region, matched_scores(records), records)
    return RegionLesions(region, lesionwise_scores(records, challenge.lesion_penalty(shape)), records)


def lesion_table(pred_classes: np.ndarray, truth_classes: np.ndarray, challenge: Challenge,
                 spacing=(1.0, 1.0, 1.0), scheme: Scheme | str | None = None) -> dict:
    """What the web app shows for one patient: per-region scores, per-lesion rows and the scheme sentence.

    Returns ``{"scheme", "convention", "regions": [{"region", <scores>}], "lesions": [<records>],
    "text"}`` where ``text`` is the fixed-width table of :func:`format_patient_table`.
    """
    scheme = schemes.resolve(challenge, scheme) if not isinstance(scheme, Scheme) else scheme
    found = score_lesions(pred_classes, truth_classes, challenge, spacing, scheme)
    regions = [{"region": r.region, **r.scores} for r in found.regions]
    lesions = [{"region": r.region, **lesion} for r in found.regions for lesion in r.lesions]
    sentence = schemes.describe(scheme, challenge)
    return {"scheme": scheme.name, "convention": sentence, "regions": regions, "lesions": lesions,
            "text": format_patient_table(regions, scheme) + "\n" + sentence}


_COLUMN_TITLES = {"dice": "Dice", "hd95": "HD95 mm", "tp": "TP", "fp": "FP", "fn": "FN", "precision": "precision",
                  "recall": "recall", "f1": "F1", "nsd": "NSD", "pq": "PQ"}


def _metric_names(scheme: Scheme) -> tuple[str, ...]:
    if scheme.lesion_method == "matched":
        return ("dice", "hd95", "nsd", "f1", "precision", "recall", "pq", "tp", "fp", "fn")
    return ("dice", "hd95", "tp", "fp", "fn")


def _cell(value) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.3f}"


def format_patient_table(regions: list[dict], scheme: Scheme) -> str:
    """One patient's lesion scores, one row per region, as fixed-width text."""
    names = _metric_names(scheme)
    lines = [("region",) + tuple(_COLUMN_TITLES[n] for n in names)]
    lines += [(r["region"],) + tuple(_cell(r[n]) for n in names) for r in regions]
    return _fixed_width(lines)


def _fixed_width(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def format_cohort_table(summary: dict, regions: Sequence[str], scheme: Scheme) -> str:
    """The lesion-wise table of a cohort summary (:func:`shared.metrics.summarize` output)."""
    stats = summary.get("metrics", {})
    names = _metric_names(scheme)
    lines = [("region",) + tuple(_COLUMN_TITLES[n] + (" mean" if n in ("dice", "hd95", "nsd", "f1", "pq",
                                                                         "precision", "recall") else " total")
                                  for n in names) + ("n",)]
    for region in regions:
        row = [region]
        for name in names:
            s = stats.get(f"lesion_{name}_{region}")
            if not s or s["n"] == 0:
                row.append("-")
            elif name in ("tp", "fp", "fn"):
                row.append(str(int(round(s["mean"] * s["n"]))))
            else:
                row.append(_cell(s["mean"]))
        first = stats.get(f"lesion_{names[0]}_{region}")
        row.append(str(first["n"]) if first else "0")
        lines.append(tuple(row))
    return _fixed_width(lines)
