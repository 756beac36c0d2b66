"""Label maps, one-hot, crop boxes and z-scoring (shared/)."""

import numpy as np
import pytest

from shared import challenges, labels, volume_ops


def test_relabel_and_back_for_each_convention():
    seg = np.array([0, 1, 2, 4, 4, 0])
    classes = labels.to_classes(seg, "brats2020")
    assert classes.tolist() == [0, 1, 2, 3, 3, 0]
    assert labels.to_source(classes, "brats2020").tolist() == seg.tolist()
    seg23 = np.array([0, 1, 2, 3])
    assert labels.to_classes(seg23, "brats2023").tolist() == [0, 1, 2, 3]
    assert labels.to_source(np.array([3]), "brats2023").tolist() == [3]


def test_label_4_means_what_the_challenge_says():
    """4 is enhancing tumour in 2020, resection cavity in GLI 2024, oedema in PED 2024."""
    four = np.array([4])
    assert labels.to_classes(four, "brats2020").tolist() == [3]  # ET
    assert labels.to_classes(four, "brats2024_post").tolist() == [4]  # RC, its own class
    assert labels.to_classes(four, "brats2024_ped").tolist() == [4]  # ED
    assert challenges.get("brats2024_gli").class_keys[4] == "RC"
    assert challenges.get("brats2024_ped").class_keys[4] == "ED"
    with pytest.raises(ValueError, match=r"\[4\]"):
        labels.to_classes(four, "brats_gtv")


def test_unexpected_labels_are_named():
    with pytest.raises(ValueError, match=r"\[3, 7\]"):
        labels.to_classes(np.array([0, 3, 7]), "brats2020")
    assert labels.unexpected_labels(np.array([0, 4]), "brats2023") == [4]


def test_one_hot_is_valid():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 4, size=(5, 6, 7)).astype(np.uint8)
    onehot = labels.one_hot(classes, 4)
    assert onehot.dtype == np.uint8 and onehot.shape == (5, 6, 7, 4)
    assert (onehot.sum(-1) == 1).all()
    assert (onehot.argmax(-1) == classes).all()


def test_regions_follow_brats_definitions():
    masks = labels.region_masks(np.array([0, 1, 2, 3]), challenges.get("brats2020"))
    assert masks["WT"].tolist() == [False, True, True, True]
    assert masks["TC"].tolist() == [False, True, False, True]
    assert masks["ET"].tolist() == [False, False, False, True]
    assert tuple(masks) == ("WT", "TC", "ET")


@pytest.mark.parametrize("box", [((48, 192), (48, 192), (5, 149)), ((-10, 30), (5, 20), (140, 170))])
def test_uncrop_inverts_crop(box):
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(240, 240, 155)).astype(np.float32)
    cropped = volume_ops.crop(volume, box)
    assert cropped.shape == tuple(b - a for a, b in box)
    restored = volume_ops.uncrop(cropped, box, volume.shape)
    inside = tuple(slice(max(a, 0), min(b, d)) for (a, b), d in zip(box, volume.shape))
    assert np.array_equal(restored[inside], volume[inside])
    assert np.array_equal(volume_ops.crop(restored, box), cropped)
    outside = np.ones(volume.shape, bool)
    outside[inside] = False
    assert (restored[outside] == 0).all()


def test_crop_keeps_trailing_channels():
    volume = np.arange(10 * 10 * 10 * 3).reshape(10, 10, 10, 3)
    assert volume_ops.crop(volume, ((2, 6), (0, 10), (3, 5))).shape == (4, 10, 2, 3)


def test_centered_box_holds_brain_and_stays_inside():
    mask = np.zeros((240, 240, 155), bool)
    mask[30:200, 50:210, 10:140] = True
    box = volume_ops.centered_box(mask, (144, 144, 144))
    assert all(b - a == 144 for a, b in box)
    assert box[0][0] >= 0 and box[1][1] <= 240 and box[2][1] <= 155
    small = np.zeros((40, 40, 30), bool)
    small[5:35, 5:35, 5:25] = True
    pad_box = volume_ops.centered_box(small, (48, 48, 48))
    assert pad_box[2] == (-9, 39)  # larger than the volume: pads evenly


def test_fixed_box_rejects_a_box_outside_the_volume():
    with pytest.raises(ValueError, match="outside"):
        volume_ops.fixed_box(((300, 400), (0, 10), (0, 10)), (240, 240, 155))


def test_zscore_uses_brain_voxels_only():
    rng = np.random.default_rng(2)
    volume = np.zeros((30, 30, 30), np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[5:25, 5:25, 5:25] = True
    volume[mask] = rng.normal(700, 50, size=mask.sum())
    z = volume_ops.zscore(volume, mask)
    assert abs(z[mask].mean()) < 1e-5 and abs(z[mask].std() - 1) < 1e-4
    assert (z[~mask] == 0).all()
    with pytest.raises(ValueError, match="constant"):
        volume_ops.zscore(np.where(mask, 5.0, 0.0), mask)


def test_voxel_spacing_from_affine():
    affine = np.diag([-1.0, 0.9, 3.0, 1.0])
    assert volume_ops.voxel_spacing(affine) == pytest.approx((1.0, 0.9, 3.0))
