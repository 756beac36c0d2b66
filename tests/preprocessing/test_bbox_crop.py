"""The default crop (``bbox``): the brain's bounding box with a margin, a shape per patient, every tumour voxel kept.

The record is the brain's bounding box grown by ``crop.margin`` and rounded
up to ``crop.multiple``, so two heads of different sizes give records of
different shapes; a tumour at the brain's edge that the seeds' fixed box
cuts stays whole; the record's box (``GridRecord``) puts the labels back
on the stored grid exactly, also where the box reaches outside the scan
and the record is zero-padded there.
"""

from __future__ import annotations

import numpy as np

from preprocessing.patient import LOST_TUMOUR
from shared import labels, volume_ops
from synthetic import cohort as synthetic_data
from tests.helpers import preprocess_volumes

PID = "BraTS20_Training_001"
BBOX = {"crop.mode": "bbox", "crop.margin": 3, "crop.multiple": 8, "crop.min_size": (8, 8, 8)}


def _edge_tumour_head(shape=(48, 48, 40), roll=6, seed=3):
    """A tiny patient rolled ``roll`` voxels along x, with a tumour ball added at the brain's far x edge."""
    patient = synthetic_data.make_patient(PID, 1, shape, "HGG", seed=seed)
    volumes = {m: np.roll(v, roll, axis=0) for m, v in patient.images.items()}
    seg = np.roll(patient.seg, roll, axis=0)
    brain = np.roll(patient.brain_mask, roll, axis=0)
    edge = int(np.flatnonzero(brain.any(axis=(1, 2)))[-1])
    y, z = shape[1] // 2, shape[2] // 2
    ball = np.zeros(shape, bool)
    ball[edge - 2:edge + 1, y - 2:y + 2, z - 2:z + 2] = True
    seg[ball & brain] = 2
    volumes["seg"] = seg.astype(np.uint8)
    return volumes, patient.affine


def _run(tmp_path, volumes, affine, **overrides):
    return preprocess_volumes(tmp_path, PID, volumes, affine, **overrides)


def _expected_shape(volumes, margin=3, multiple=8):
    brain = volume_ops.nonzero_brain_mask([v for k, v in volumes.items() if k != "seg"])
    return tuple(-(-(hi - lo + 2 * margin) // multiple) * multiple for lo, hi in volume_ops.bounding_box(brain))


def test_bbox_box_is_the_brain_box_plus_margin_rounded_up_symmetrically():
    mask = np.zeros((60, 50, 40), bool)
    mask[10:30, 5:40, 1:20] = True
    # x: 10-2..30+2 = 24, already a multiple of 8; y: 3..42 = 39 -> 40, one more at the top;
    # z: -1..22 = 23 -> 24, one more at the top: the margin reaches outside the volume (-1)
    assert volume_ops.bbox_box(mask, 2, 8, (8, 8, 8)) == ((8, 32), (3, 43), (-1, 23))
    small = np.zeros((60, 50, 40), bool)
    small[20:22, 20:22, 20:22] = True
    assert volume_ops.bbox_box(small, 0, 8, (16, 24, 8)) == ((13, 29), (9, 33), (17, 25))  # min_size, centred


def test_bbox_records_have_the_brain_box_shape_per_patient_and_keep_the_tumour(tmp_path):
    volumes, affine = _edge_tumour_head()
    done = _run(tmp_path / "a", volumes, affine, **BBOX)
    assert done.record.image.shape[:3] == done.record.mask.shape[:3] == _expected_shape(volumes)
    assert all(n % 8 == 0 for n in done.record.image.shape[:3])
    assert not any(LOST_TUMOUR in w for w in done.warnings)
    truth = labels.to_classes(volumes["seg"], "brats2020")
    classes = done.record.mask.argmax(-1).astype(np.uint8)
    assert np.count_nonzero(classes) == np.count_nonzero(truth) > 0
    np.testing.assert_array_equal(done.grid.invert(classes), truth)  # back on the stored grid, exactly

    other, other_affine = _edge_tumour_head(shape=(32, 40, 32), roll=0, seed=5)  # a smaller head
    small = _run(tmp_path / "b", other, other_affine, **BBOX)
    assert small.record.image.shape[:3] == _expected_shape(other) != done.record.image.shape[:3]


def test_the_seeds_fixed_box_loses_the_edge_tumour_the_bbox_keeps(tmp_path):
    volumes, affine = _edge_tumour_head()
    box = ((10, 38), (10, 38), (1, 38))  # the seeds' 48:192 x 48:192 x 5:149, scaled to 48x48x40
    fixed = _run(tmp_path, volumes, affine, **{"crop.mode": "fixed", "crop.box": box})
    assert any(LOST_TUMOUR in w for w in fixed.warnings)


def test_a_bbox_reaching_outside_the_scan_pads_and_inverts(tmp_path):
    volumes, affine = _edge_tumour_head()  # the brain touches x = 47 after the roll: the margin goes beyond
    done = _run(tmp_path, volumes, affine, **{**BBOX, "crop.margin": 6})
    (x0, x1), _, _ = done.record.crop_box
    assert x1 > 48  # reaches outside the 48-voxel scan
    outside = done.record.image[48 - x0:]
    assert outside.size and not outside.any()  # zero-padded there
    assert (done.record.mask[48 - x0:].argmax(-1) == 0).all()  # background in the mask
    truth = labels.to_classes(volumes["seg"], "brats2020")
    np.testing.assert_array_equal(done.grid.invert(done.record.mask.argmax(-1).astype(np.uint8)), truth)
