"""BraTS metrics on hand-made volumes (shared/metrics.py)."""

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from shared import challenges, metrics

GLI = challenges.get("brats2023_gli")  # classes 1 NETC, 2 SNFH, 3 ET

SHAPE = (20, 20, 16)


def empty():
    return np.zeros(SHAPE, dtype=bool)


def cube(start=(5, 5, 5), size=4):
    mask = empty()
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def plane(axis: int, index: int, lo=4, hi=12):
    """A one-voxel-thick square: every voxel is surface, so distances are exact."""
    mask = empty()
    where = [slice(lo, hi)] * 3
    where[axis] = slice(index, index + 1)
    mask[tuple(where)] = True
    return mask


def brute_force_hd95(pred, truth, spacing):
    """Reference: all pairwise surface distances on the uncropped volume."""
    structure = ndimage.generate_binary_structure(3, 1)

    def surface_points(mask):
        surface = mask ^ ndimage.binary_erosion(mask, structure=structure, border_value=0)
        return np.argwhere(surface) * np.asarray(spacing)

    distances = cdist(surface_points(pred), surface_points(truth))
    return max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))


@pytest.mark.parametrize(
    "pred_empty, truth_empty, want_dice, want_hd95",
    [(True, True, 1.0, 0.0), (True, False, 0.0, metrics.EMPTY_HD95), (False, True, 0.0, metrics.EMPTY_HD95)],
)
def test_empty_combinations_follow_brats(pred_empty, truth_empty, want_dice, want_hd95):
    pred = empty() if pred_empty else cube()
    truth = empty() if truth_empty else cube()
    assert metrics.dice(pred, truth) == want_dice
    assert metrics.hd95(pred, truth) == want_hd95


def test_both_present_dice_and_hd95():
    assert metrics.dice(cube(), cube()) == 1.0
    assert metrics.hd95(cube(), cube()) == 0.0
    a, b = cube((2, 2, 2), 4), cube((10, 10, 10), 4)
    assert metrics.dice(a, b) == 0.0
    assert metrics.hd95(a, b) > 0
    # 4x4x4 cube vs the same cube plus a 4x4x4 one next to it: 64 shared of 64 + 128.
    assert metrics.dice(cube((4, 4, 4)), cube((4, 4, 4)) | cube((8, 4, 4))) == pytest.approx(2 * 64 / 192)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_hd95_of_offset_planes_is_the_offset(k):
    assert metrics.hd95(plane(0, 4), plane(0, 4 + k)) == pytest.approx(k)


def test_hd95_uses_anisotropic_spacing():
    k = 2
    assert metrics.hd95(plane(2, 4), plane(2, 4 + k), spacing=(1, 1, 3)) == pytest.approx(3 * k)
    # The same offset along an axis with 1 mm voxels stays k mm.
    assert metrics.hd95(plane(0, 4), plane(0, 4 + k), spacing=(1, 1, 3)) == pytest.approx(k)


def test_hd95_ignores_a_five_percent_outlier():
    truth = plane(0, 4)  # 64 voxels
    pred = plane(0, 6)
    pred[18, 18, 15] = True  # one stray voxel far away
    to_truth, _ = metrics.surface_distances(pred, truth)
    assert to_truth.max() > 10  # the plain Hausdorff distance sees the outlier...
    assert metrics.hd95(pred, truth) == pytest.approx(2.0)  # ...the 95th percentile does not


@pytest.mark.parametrize("spacing", [(1, 1, 1), (1.0, 0.5, 2.5)])
def test_hd95_matches_brute_force_with_cropping(spacing):
    rng = np.random.default_rng(4)
    pred = ndimage.binary_dilation(rng.random(SHAPE) > 0.985, iterations=1)
    truth = ndimage.binary_dilation(rng.random(SHAPE) > 0.985, iterations=1)
    truth[0, :5, :5] = True  # touches the volume's edge: erosion must treat outside as empty
    assert metrics.hd95(pred, truth, spacing) == pytest.approx(brute_force_hd95(pred, truth, spacing))


def test_sensitivity_and_specificity_by_hand():
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    pred = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], dtype=bool)
    # TP 3, FN 1, FP 2, TN 4
    assert metrics.sensitivity(pred, truth) == pytest.approx(3 / 4)
    assert metrics.specificity(pred, truth) == pytest.approx(4 / 6)
    none = np.zeros(10, dtype=bool)
    assert metrics.sensitivity(none, none) == 1.0
    assert metrics.sensitivity(pred, none) == 0.0
    assert metrics.specificity(none, np.ones(10, dtype=bool)) == 1.0


def test_volumes_in_ml():
    classes = np.zeros((4, 4, 4), dtype=np.uint8)
    classes[0, 0, :3] = 1
    classes[1, 0, :2] = 2
    classes[2, 0, :1] = 3
    spacing = (2, 2, 2)  # 8 mm³ = 0.008 mL per voxel
    assert metrics.volume_ml(classes > 0, spacing) == pytest.approx(6 * 0.008)
    vols = metrics.volumes_ml(classes, GLI, spacing)
    assert set(vols) == {"WT", "TC", "ET", "NETC", "SNFH"}
    assert vols["WT"] == pytest.approx(6 * 0.008)
    assert vols["TC"] == pytest.approx(4 * 0.008)
    assert vols["ET"] == pytest.approx(0.008)
    assert vols["NETC"] == pytest.approx(3 * 0.008)
    assert vols["SNFH"] == pytest.approx(2 * 0.008)


def test_score_patient_region_logic():
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[5:9, 5:9, 5:9] = 1  # necrotic core only
    pred = truth.copy()
    row = metrics.score_patient(pred, truth, GLI, (1, 1, 1))
    # Class 1 belongs to WT and TC but not to ET, which is empty in both.
    assert row["dice_WT"] == row["dice_TC"] == row["dice_NETC"] == 1.0
    assert row["dice_ET"] == 1.0 and row["hd95_ET"] == 0.0
    assert row["volume_truth_WT_ml"] == row["volume_truth_TC_ml"] == pytest.approx(0.064)
    assert row["volume_truth_ET_ml"] == 0.0
    # Relabel the prediction as enhancing: WT and TC still match, ET now exists in only one.
    pred[pred == 1] = 3
    row = metrics.score_patient(pred, truth, GLI, (1, 1, 1))
    assert row["dice_WT"] == row["dice_TC"] == 1.0
    assert row["dice_ET"] == 0.0 and row["hd95_ET"] == metrics.EMPTY_HD95
    assert row["dice_NETC"] == 0.0 and row["sensitivity_NETC"] == 0.0
    for name in ("WT", "TC", "ET", "NETC", "SNFH"):
        for key in ("dice_{}", "hd95_{}", "sensitivity_{}", "specificity_{}", "volume_pred_{}_ml", "volume_truth_{}_ml"):
            assert key.format(name) in row
    assert len(row) == 30


def test_score_patient_scores_every_region_of_gli_2024():
    """RC is its own region (label 4, class 4) and never part of WT or ET."""
    gli24 = challenges.get("brats2024_gli")
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[2:6, 2:6, 2:6] = 4  # resection cavity only
    row = metrics.score_patient(truth, truth, gli24, (1, 1, 1))
    assert row["dice_RC"] == 1.0 and row["volume_truth_RC_ml"] == pytest.approx(0.064)
    assert row["volume_truth_WT_ml"] == row["volume_truth_ET_ml"] == 0.0
    assert {f"dice_{r}" for r in ("WT", "TC", "ET", "NETC", "SNFH", "RC")} <= set(row)


def test_score_patient_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4, 4\).*\(4, 4, 5\)"):
        metrics.score_patient(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), GLI, (1, 1, 1))


def test_summarize_three_rows():
    rows = [
        {"patient": "a", "dice_WT": 0.9, "hd95_WT": 2.0, "dice_TC": 0.5, "note": "x"},
        {"patient": "b", "dice_WT": 0.6, "hd95_WT": 8.0, "dice_TC": 0.7},
        {"patient": "c", "dice_WT": 0.3, "hd95_WT": 5.0, "dice_TC": float("nan")},
    ]
    summary = metrics.summarize(rows, ("WT", "TC", "ET"))
    assert summary["convention"] == metrics.CONVENTION and summary["n"] == 3
    wt = summary["metrics"]["dice_WT"]
    assert wt["mean"] == pytest.approx(0.6) and wt["median"] == pytest.approx(0.6)
    assert wt["std"] == pytest.approx(math.sqrt(0.06)) and wt["n"] == 3
    assert (wt["min"], wt["max"], wt["q1"], wt["q3"]) == pytest.approx((0.3, 0.9, 0.45, 0.75))
    assert summary["metrics"]["hd95_WT"]["median"] == pytest.approx(5.0)
    assert summary["metrics"]["dice_TC"]["n"] == 2  # the NaN is left out
    assert "note" not in summary["metrics"] and "patient" not in summary["metrics"]
    assert summary["best"]["WT"] == {"id": "a", "dice": 0.9}
    assert summary["worst"]["WT"] == {"id": "c", "dice": 0.3}
    assert summary["best"]["TC"]["id"] == "b" and summary["worst"]["TC"]["id"] == "a"
    assert "ET" not in summary["best"]


def test_format_table_shows_regions_and_convention():
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[4:10, 4:10, 4:10] = 2
    truth[6:8, 6:8, 6:8] = 3
    rows = [{"patient": f"p{i}", **metrics.score_patient(np.roll(truth, i, axis=0), truth, GLI, (1, 1, 1))}
            for i in range(3)]
    table = metrics.format_table(metrics.summarize(rows, tuple(GLI.regions)))
    lines = table.splitlines()
    assert lines[0].startswith("region") and "Dice mean±std" in lines[0]
    assert [line.split()[0] for line in lines[2:5]] == ["WT", "TC", "ET"]
    assert "p0 (1.000)" in lines[2] and metrics.CONVENTION in table
    assert "n = 3 patients" in table
    empty_table = metrics.format_table(metrics.summarize([], tuple(GLI.regions))).splitlines()
    assert empty_table[2].split() == ["WT", "-", "-", "-", "-", "-", "-"]


def test_score_patient_box_gives_the_full_volume_numbers():
    truth = np.zeros(SHAPE, dtype=np.uint8)
    truth[4:12, 4:12, 4:10] = 2
    truth[6:9, 6:9, 5:8] = 1
    truth[7:9, 7:10, 6:8] = 3
    pred = np.roll(truth, 2, axis=1)
    pred[18, 1, 14] = 3  # a stray voxel far from the rest
    spacing = (1.0, 1.0, 2.0)
    row = metrics.score_patient(pred, truth, GLI, spacing)
    for name, members in metrics.structures(GLI).items():
        p, t = np.isin(pred, members), np.isin(truth, members)
        assert row[f"dice_{name}"] == pytest.approx(metrics.dice(p, t))
        assert row[f"hd95_{name}"] == pytest.approx(metrics.hd95(p, t, spacing))
        assert row[f"sensitivity_{name}"] == pytest.approx(metrics.sensitivity(p, t))
        assert row[f"specificity_{name}"] == pytest.approx(metrics.specificity(p, t))
        assert row[f"volume_pred_{name}_ml"] == pytest.approx(metrics.volume_ml(p, spacing))


def test_score_patient_refuses_source_labels():
    seg = np.zeros((4, 4, 4), dtype=np.uint8)
    seg[0, 0, 0] = 4  # BraTS 2020 enhancing, not yet mapped to class 3
    with pytest.raises(ValueError, match="to_classes"):
        metrics.score_patient(seg, seg, GLI, (1, 1, 1))
