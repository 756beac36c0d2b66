r"""Where a model's tumour errors lie, per patient, in source space (prints JSON).

    python benchmarks/tumour_errors.py --truth_dir=W/test --pred_dir=W/pred_0     # a run's predictions
    python benchmarks/tumour_errors.py --truth_dir=W/cohort                        # truths only: lesion counts
    python benchmarks/tumour_errors.py --truth_dir=W/test --contrast               # + core against oedema

The figures BUILD_NOTES gives for the hard cohort's failure cases (issue 23)
that the evaluation's scores do not show:

* ``truth_wt_components``: sizes of the truth's whole-tumour components
  (26-connected, as ``shared.postprocessing`` counts them), largest first;
  with predictions also the prediction's, each with the truth voxels it
  covers (a false positive covers none);
* ``missed_core_as``: where the truth's tumour-core voxels that the
  prediction misses went, by predicted label;
* ``tc_dice`` and ``tc_dice_core_filled``: tumour-core Dice as predicted and
  after ``shared.postprocessing``'s ``fill_core`` rule;
* ``core_contrast`` (truths with their scans): how far the non-enhancing
  core (tumour core less enhancing tumour) stands from the oedema around it
  in each scan, as the difference of their means in oedema standard
  deviations, and ``et_share_of_tc``: where it is near 0 in every scan and
  there is no enhancing rim, nothing but the core's shape tells it from oedema.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from shared import challenges, labels, postprocessing  # noqa: E402

_TOP = 6  # components listed per patient


def _classes(path: str, challenge) -> np.ndarray:
    return labels.to_classes(np.asarray(nib.load(path).dataobj).astype(np.int64), challenge.label_convention)


def _components(mask: np.ndarray, truth: np.ndarray | None = None) -> list:
    found, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(found.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes)[:_TOP]
    if truth is None:
        return [int(sizes[i]) for i in order]
    covered = np.bincount(found[truth].ravel(), minlength=n + 1)[1:]
    return [{"voxels": int(sizes[i]), "truth_voxels": int(covered[i])} for i in order]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else round(2.0 * int((a & b).sum()) / total, 4)


def core_contrast(truth: np.ndarray, scans: dict, challenge) -> dict:
    """Per scan: (mean of the non-enhancing core - mean of the oedema) / oedema standard deviation."""
    regions = challenge.region_classes()
    tc, et = np.isin(truth, regions["TC"]), np.isin(truth, regions["ET"])
    core, oedema = tc & ~et, np.isin(truth, regions["WT"]) & ~tc
    if not core.any() or not oedema.any():
        return {}
    out = {}
    for name, image in sorted(scans.items()):
        around = image[oedema].astype(np.float64)
        out[name] = round(float((image[core].mean() - around.mean()) / max(around.std(), 1e-9)), 2)
    return out


def _scans(folder: str) -> dict:
    """A patient folder's scans by the name after their last underscore (``..._t1ce.nii.gz`` -> t1ce)."""
    paths = [p for p in glob.glob(os.path.join(folder, "*.nii*")) if "seg" not in os.path.basename(p)]
    return {os.path.basename(p).split(".nii")[0].rsplit("_", 1)[-1]: np.asarray(nib.load(p).dataobj) for p in paths}


def patient_errors(truth: np.ndarray, pred: np.ndarray | None, challenge, scans: dict | None = None) -> dict:
    """The error summary of one patient (class volumes; ``scans`` by name for :func:`core_contrast`)."""
    regions = challenge.region_classes()
    wt = np.isin(truth, regions["WT"])
    tc = np.isin(truth, regions["TC"])
    out = {"truth_wt_components": _components(wt)}
    if scans:
        out["et_share_of_tc"] = round(int(np.isin(truth, regions["ET"]).sum()) / int(tc.sum()), 3) if tc.any() else None
        out["core_contrast"] = core_contrast(truth, scans, challenge)
    if pred is None:
        return out
    tc_pred = np.isin(pred, regions["TC"])
    keys = labels.class_keys(challenge.label_convention)
    missed = pred[tc & ~tc_pred]
    filled = postprocessing.apply(pred, challenge, [{"rule": "fill_core"}])
    out.update(pred_wt_components=_components(np.isin(pred, regions["WT"]), wt),
               missed_core_as={keys[c]: int((missed == c).sum()) for c in range(len(keys)) if (missed == c).any()},
               tc_dice=_dice(tc, tc_pred), tc_dice_core_filled=_dice(tc, np.isin(filled, regions["TC"])))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truth_dir", required=True, help="cohort folder: one folder per patient with its *seg*")
    parser.add_argument("--pred_dir", default="", help="serving.predict's output folder (<patient>.nii.gz)")
    parser.add_argument("--challenge", default="brats2020")
    parser.add_argument("--contrast", action="store_true",
                        help="also read each patient's scans: core_contrast and et_share_of_tc")
    args = parser.parse_args(argv)
    challenge = challenges.get(args.challenge)
    result = {}
    for seg in sorted(glob.glob(os.path.join(args.truth_dir, "*", "*seg*.nii*"))):
        pid = os.path.basename(os.path.dirname(seg))
        pred_path = os.path.join(args.pred_dir, f"{pid}.nii.gz") if args.pred_dir else ""
        if args.pred_dir and not os.path.exists(pred_path):
            continue
        pred = _classes(pred_path, challenge) if pred_path else None
        scans = _scans(os.path.dirname(seg)) if args.contrast else None
        result[pid] = patient_errors(_classes(seg, challenge), pred, challenge, scans)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
