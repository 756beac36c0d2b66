"""The BraTS 2026 whole-region rules and the spacing the official package uses, as the leaderboard computes them.

The official 2026 evaluation (``brats-evaluation`` 0.0.10 on panoptica 2.1.7)
reports beside its matched lesions a "global binary" Dice, HD95 and
normalised surface Dice of each region.  Its rules (our own implementation,
checked against the package in tests/evaluation/test_official.py):

* empty in both: NaN for all three (the region drops out of means);
* empty in one, or both present but sharing no voxel: Dice 0, NSD 0, HD95
  inf (``brats-parse-metrics`` then writes 373 for the HD95);
* otherwise Dice, HD95 (the pooled 95th percentile of surface distances) and
  NSD, computed by the package *without the voxel spacing*: distances in
  voxels and the NSD tolerance 0.5 (panoptica's fallback when no spacing is
  given), so only surface voxels that lie on the other surface count.

Two faults of the package change numbers on non-1 mm cases; the leaderboard
has them, so the default scheme ``brats2026`` reproduces them and
``brats2026_corrected`` (:mod:`evaluation.schemes`) does not:

* whole-region metrics ignore the spacing (above);
* reading files with SimpleITK it pairs the (z, y, x) array with the (x, y, z)
  spacing, so the lesions of an anisotropic case get the spacing on the wrong
  axes: on our (x, y, z) arrays that is the header zooms reversed
  (:func:`lesion_spacing`).
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from shared import metrics

# panoptica's NSD tolerance when a metric gets no spacing (the whole-region metrics of the package).
UNIT_NSD_TOLERANCE = 0.5
# What brats-parse-metrics writes for an infinite whole-region HD95 (the SRI24 cube's diameter, rounded).
PARSER_HD95 = 373.0
# The whole-region sentence of a 2026 report (the BraTS 2017-2020 one does not hold for its Dice/HD95/NSD).
CONVENTION = ("BraTS 2026 whole-region rules (brats-evaluation / panoptica): Dice, HD95 (pooled 95th percentile "
              "of surface distances) and NSD per region; a region empty in both is NaN and left out of means; "
              "empty in one, or no shared voxel: Dice 0, NSD 0, HD95 inf (the official CSV writes 373); cohort "
              "means are over finite values and say how many infinite or NaN values they left out; "
              "sensitivity, specificity and volumes as in every scheme.")
# How brats-evaluate pairs a prediction with a truth: the prediction's name ends in the truth's id + ".nii.gz".
OFFICIAL_ID = re.compile(r"(\d{5}(?:-\d{3})?|\d{4}-\d{1,3})")


def lesion_spacing(zooms, mode: str) -> tuple[float, ...]:
    """The spacing lesions are measured with: the header zooms (``header``), or reversed as the
    official ``brats-evaluate`` applies them to the arrays SimpleITK reads (``sitk_reversed``)."""
    zooms = tuple(float(z) for z in zooms)
    if mode == "header":
        return zooms
    if mode == "sitk_reversed":
        return zooms[::-1]
    raise ValueError(f"unknown lesion spacing mode {mode!r}; known: header, sitk_reversed")


def nsd(pred_to_truth: np.ndarray, truth_to_pred: np.ndarray, tolerance_mm: float) -> float:
    """Normalised surface Dice: the mean of the two directions' shares of surface voxels within the tolerance."""
    return float((np.mean(pred_to_truth <= tolerance_mm) + np.mean(truth_to_pred <= tolerance_mm)) / 2.0)


def _surface_points(mask: np.ndarray, spacing) -> np.ndarray:
    """Coordinates in mm of the voxels with a 6-neighbour outside the mask (the volume's edge counts as outside)."""
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
    return np.argwhere(mask & ~eroded) * np.asarray(spacing, dtype=float)


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """(prediction->truth, truth->prediction) distances between surface voxels, as
    :func:`shared.metrics.surface_distances` gives them, by nearest-neighbour search.

    A whole region spans most of the volume (satellites far apart), where a
    distance transform of the box costs seconds; a k-d tree of the surface
    voxels costs milliseconds.  At unit spacing (the package's whole-region
    metrics) the coordinates are integers, so the distances are the same floats.
    """
    box = tuple(slice(max(lo - 1, 0), hi + 2) for lo, hi in
                (np.flatnonzero((pred | truth).any(axis=tuple(a for a in range(3) if a != axis)))[[0, -1]]
                 for axis in range(3)))
    surf_pred, surf_truth = _surface_points(pred[box], spacing), _surface_points(truth[box], spacing)
    to_truth = cKDTree(surf_truth).query(surf_pred, k=1)[0]
    to_pred = cKDTree(surf_pred).query(surf_truth, k=1)[0]
    return to_truth, to_pred


def whole_region(pred: np.ndarray, truth: np.ndarray, spacing, use_spacing: bool) -> dict[str, float]:
    """Dice, HD95 and NSD of one region by the 2026 rules (see the module docstring).

    ``use_spacing`` False reproduces the package (unit spacing, NSD tolerance
    0.5); True measures in mm with the NSD tolerance at the smallest spacing.
    """
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    n_pred, n_truth = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    if n_pred == 0 and n_truth == 0:
        return {"dice": math.nan, "hd95": math.nan, "nsd": math.nan}
    inter = int(np.count_nonzero(pred & truth))
    if inter == 0:
        return {"dice": 0.0, "hd95": math.inf, "nsd": 0.0}
    spacing = tuple(float(s) for s in spacing) if use_spacing else (1.0,) * pred.ndim
    tolerance = min(spacing) if use_spacing else UNIT_NSD_TOLERANCE
    to_truth, to_pred = surface_distances(pred, truth, spacing)
    return {"dice": 2.0 * inter / (n_pred + n_truth), "hd95": metrics.reduce_hd95(to_truth, to_pred, "pooled"),
            "nsd": nsd(to_truth, to_pred, tolerance)}


def whole_region_row(pred_classes: np.ndarray, truth_classes: np.ndarray, regions: dict, spacing,
                     use_spacing: bool) -> dict[str, float]:
    """``dice_<R>``, ``hd95_<R>``, ``nsd_<R>`` of every region (class indices per region)."""
    row = {}
    for region, classes in regions.items():
        found = whole_region(np.isin(pred_classes, classes), np.isin(truth_classes, classes), spacing, use_spacing)
        row.update({f"{metric}_{region}": value for metric, value in found.items()})
    return row


def name_note(pred_paths: list[str]) -> str | None:
    """The report's line when predictions are named so the official ``brats-evaluate`` will not pair them.

    It pairs a truth file with the prediction whose name *ends* in the truth's
    ``NNNNN-NNN.nii.gz``: ``<patient>.nii.gz`` (what serving.predict writes) is
    found, ``<patient>_seg.nii.gz`` and ``.nii`` are not.
    """
    unpaired = []
    for path in pred_paths:
        name = os.path.basename(path)
        wanted = OFFICIAL_ID.search(name)
        if wanted and not name.endswith(f"{wanted.group(1)}.nii.gz"):
            unpaired.append(name)
    if not unpaired:
        return None
    return (f"{len(unpaired)} prediction(s) (e.g. {unpaired[0]}) are named so the official brats-evaluate will not "
            "find them (it wants names ending in the truth's NNNNN-NNN.nii.gz): rename to <patient>.nii.gz, "
            "as serving.predict writes them")
