"""A literal, slow transcription of the BraTS 2023-2025 lesion-wise reference code, for tests.

Written from rachitsaluja/BraTS-2024-Metrics ``metrics_GLI.py`` / ``metrics_SSA.py``
(July 2024 and May 2025: the joining, thresholds and dilations read the same) and the
surface-distance copy both BraTS repositories vendor (google-deepmind/surface-distance,
``compute_surface_distances`` + ``compute_robust_hausdorff``), step by step on the full
volume, with scipy in place of cc3d and nibabel files: ``ndimage.label`` numbers
components in C raster order, as cc3d does for the C-ordered masks
``binary_dilation`` returns.  Only the marching-cubes triangle table is taken from
:mod:`evaluation.surface` (DeepMind's own, re-encoded); every other step is independent
of ``shared``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from evaluation import surface

STRUCT_18 = ndimage.generate_binary_structure(3, 2)
CONN_26 = np.ones((3, 3, 3), dtype=bool)


# -- surface_distance (the vendored copy) ----------------------------------------

def compute_surface_distances(mask_gt, mask_pred, spacing_mm):
    area_of = np.zeros([256])
    for code, normals in enumerate(surface.triangles()):
        total = 0.0
        for normal in normals:
            n = np.zeros([3])
            n[0] = normal[0] * spacing_mm[1] * spacing_mm[2]
            n[1] = normal[1] * spacing_mm[0] * spacing_mm[2]
            n[2] = normal[2] * spacing_mm[0] * spacing_mm[1]
            total += np.linalg.norm(n)
        area_of[code] = total
    mask_all = mask_gt | mask_pred
    lo, hi = np.zeros(3, np.int64), np.zeros(3, np.int64)
    for axis in range(3):
        idx = np.nonzero(np.any(mask_all, axis=tuple(a for a in range(3) if a != axis)))[0]
        if len(idx) == 0:
            return {"distances_gt_to_pred": np.array([]), "distances_pred_to_gt": np.array([]),
                    "surfel_areas_gt": np.array([]), "surfel_areas_pred": np.array([])}
        lo[axis], hi[axis] = np.min(idx), np.max(idx)
    crop_gt = np.zeros((hi - lo) + 2, np.uint8)
    crop_pred = np.zeros((hi - lo) + 2, np.uint8)
    crop_gt[:-1, :-1, :-1] = mask_gt[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    crop_pred[:-1, :-1, :-1] = mask_pred[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    kernel = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])
    code_gt = ndimage.correlate(crop_gt.astype(np.uint8), kernel, mode="constant", cval=0)
    code_pred = ndimage.correlate(crop_pred.astype(np.uint8), kernel, mode="constant", cval=0)
    borders_gt = (code_gt != 0) & (code_gt != 255)
    borders_pred = (code_pred != 0) & (code_pred != 255)
    dist_gt = (ndimage.distance_transform_edt(~borders_gt, sampling=spacing_mm) if borders_gt.any()
               else np.inf * np.ones(borders_gt.shape))
    dist_pred = (ndimage.distance_transform_edt(~borders_pred, sampling=spacing_mm) if borders_pred.any()
                 else np.inf * np.ones(borders_pred.shape))
    d_gt, d_pred = dist_pred[borders_gt], dist_gt[borders_pred]
    a_gt, a_pred = area_of[code_gt][borders_gt], area_of[code_pred][borders_pred]
    if d_gt.shape != (0,):
        pairs = np.array(sorted(zip(d_gt, a_gt)))
        d_gt, a_gt = pairs[:, 0], pairs[:, 1]
    if d_pred.shape != (0,):
        pairs = np.array(sorted(zip(d_pred, a_pred)))
        d_pred, a_pred = pairs[:, 0], pairs[:, 1]
    return {"distances_gt_to_pred": d_gt, "distances_pred_to_gt": d_pred,
            "surfel_areas_gt": a_gt, "surfel_areas_pred": a_pred}


def compute_robust_hausdorff(sd, percent):
    out = []
    for d, a in ((sd["distances_gt_to_pred"], sd["surfel_areas_gt"]),
                 (sd["distances_pred_to_gt"], sd["surfel_areas_pred"])):
        if len(d) > 0:
            cum = np.cumsum(a) / np.sum(a)
            idx = np.searchsorted(cum, percent / 100.0)
            out.append(d[min(idx, len(d) - 1)])
        else:
            out.append(np.inf)
    return max(out)


def hd95(gt, pred, spacing):
    return compute_robust_hausdorff(compute_surface_distances(gt.astype(bool), pred.astype(bool), spacing), 95)


# -- BraTS-2024-Metrics -------------------------------------------------------

def combined_by_dilation(mask, dil):
    """save_tmp_files: every voxel takes the id of its component of the dilated mask."""
    dilated_cc, _ = ndimage.label(ndimage.binary_dilation(mask, STRUCT_18, iterations=dil), CONN_26)
    cc, _ = ndimage.label(mask, CONN_26)
    out = np.zeros_like(dilated_cc)
    for comp in range(1, int(np.max(dilated_cc)) + 1):
        tmp = np.zeros_like(dilated_cc)
        tmp[dilated_cc == comp] = 1
        tmp = cc * tmp
        np.place(tmp, tmp > 0, comp)
        out += tmp
    return out


def threshold(ids, limit):
    labels, counts = np.unique(ids, return_counts=True)
    remove = labels[counts <= limit]
    return np.where(np.isin(ids, remove, invert=True), ids, 0)


def touching_labels(data1, data2):
    found = set()
    for l1 in np.unique(data1)[1:]:
        m1 = data1 == l1
        for l2 in np.unique(data2)[1:]:
            m2 = data2 == l2
            if np.any(ndimage.binary_dilation(m1, STRUCT_18) & m2) or np.any(ndimage.binary_dilation(m2, STRUCT_18) & m1):
                found.add((l1, l2))
    return found


def relabel(tuples, data):
    current = int(np.max(data)) + 1
    seen, mapping = {}, {}
    for original, common in sorted(tuples):
        if common not in seen:
            seen[common] = current
            current += 1
    for original, common in sorted(tuples):
        if original not in mapping:
            mapping[original] = seen[common]
    out = np.copy(data)
    for original, new in mapping.items():
        out[data == original] = new
    return out


def combine(own, partners):
    """combine_lesions_<TISSUE>: relabel by each partner in turn when more than one pair touches."""
    out = own
    for partner in partners:
        pairs = touching_labels(out, partner)
        if len(pairs) > 1:
            out = relabel(pairs, out)
    return out


def lesion_scores(pred_ids, gt_ids, dil, thresh, penalty, spacing):
    """get_LesionWiseScores + the per-label aggregation of get_LesionWiseResults."""
    sx, sy, sz = spacing
    tp, fn, gt_tp, pairs = [], [], [], []
    for comp in range(1, int(np.max(gt_ids, initial=0)) + 1):
        gt_tmp = (gt_ids == comp).astype(np.int32)
        if not gt_tmp.any():  # reorder_labels_nifti numbers labels 1..n; skip gaps of ours
            continue
        zone = ndimage.binary_dilation(gt_tmp, STRUCT_18, iterations=dil)
        gt_vol = np.sum(gt_tmp > 0) * sx * sy * sz
        hits = np.unique(pred_ids * zone)
        hits = hits[hits != 0]
        tp += list(hits)
        pred_tmp = np.isin(pred_ids, hits).astype(np.int32)
        dice = 2.0 * np.sum(pred_tmp & gt_tmp) / (pred_tmp.sum() + gt_tmp.sum())
        hd = hd95(gt_tmp, pred_tmp, spacing)
        pairs.append((len(hits), gt_vol, dice, penalty if np.isinf(hd) else hd))
        (gt_tp if len(hits) else fn).append(comp)
    fp = np.unique(pred_ids[np.isin(pred_ids, tp + [0], invert=True)])
    kept = [p for p in pairs if p[1] > thresh]
    n = len(kept) + len(fp)
    dice = sum(p[2] for p in kept) / n if n else math.nan
    hd = (sum(p[3] for p in kept) + len(fp) * penalty) / n if n else math.nan
    return {"dice": 1.0 if math.isnan(dice) else dice, "hd95": 0.0 if math.isnan(hd) else hd,
            "tp": len(gt_tp) - sum(1 for p in pairs if p[0] and p[1] <= thresh), "fp": len(fp),
            "fn": len(fn) - sum(1 for p in pairs if not p[0] and p[1] <= thresh)}


GLI = {  # metrics_GLI.py: labels, dilations ("SFNH" typo: SNFH keeps 3), thresholds, joins
    "tissues": {"WT": (1, 2, 3), "TC": (1, 3), "NETC": (1,), "SNFH": (2,), "ET": (3,), "RC": (4,)},
    "dil": {"WT": 3, "TC": 3, "NETC": 5, "SNFH": 3, "ET": 3, "RC": 5},
    "thresh": {"WT": 20, "TC": 20, "NETC": 20, "SNFH": 20, "ET": 10, "RC": 20},
    "joins": {"NETC": ("ET", "RC"), "ET": ("NETC", "RC"), "RC": ("ET", "NETC"), "SNFH": ("ET", "RC", "NETC")},
    "scored": ("WT", "TC", "NETC", "SNFH", "ET", "RC"), "penalty": 337.0,
}
SSA = {  # metrics_SSA.py: ET joined through NETC; 3 / 50 everywhere
    "tissues": {"WT": (1, 2, 3), "TC": (1, 3), "NETC": (1,), "ET": (3,)},
    "dil": dict.fromkeys(("WT", "TC", "NETC", "ET"), 3), "thresh": dict.fromkeys(("WT", "TC", "NETC", "ET"), 50),
    "joins": {"ET": ("NETC",)}, "scored": ("WT", "TC", "ET"), "penalty": 374.0,
}


def lesionwise_2024(pred_labels, gt_labels, task, spacing=(1.0, 1.0, 1.0), mm3=False):
    """Per scored region {dice, hd95, tp, fp, fn}, as get_LesionWiseResults (``mm3``: MEN-RT's threshold)."""
    cc = {}
    for which, labels in (("gt", gt_labels), ("pred", pred_labels)):
        for t, values in task["tissues"].items():
            ids = combined_by_dilation(np.isin(labels, values), task["dil"][t])
            if which == "pred":
                limit = task["thresh"][t] / (spacing[0] * spacing[1] * spacing[2]) if mm3 else task["thresh"][t]
                ids = threshold(ids, limit)
            cc[which, t] = ids
    out = {}
    for t in task["scored"]:
        ids = {w: (combine(cc[w, t], [cc[w, p] for p in task["joins"][t]]) if t in task["joins"] else cc[w, t])
               for w in ("gt", "pred")}
        out[t] = lesion_scores(ids["pred"], ids["gt"], task["dil"][t], task["thresh"][t], task["penalty"], spacing)
    return out
