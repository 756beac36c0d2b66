"""The default crop follows the brain: a tumour at the brain's edge stays in the record and comes back.

A head shifted towards a corner of its grid (as the hard cohort's affine
does) with tumour at the brain's edge: the seeds' kind of fixed box cuts
it (LOST_TUMOUR), the brain crop keeps every tumour voxel, and the record's
box puts the labels back on the stored grid.
"""

from __future__ import annotations

import numpy as np

from preprocessing.patient import LOST_TUMOUR
from shared import labels, volume_ops
from shared.spec import PreprocessingSpec
from synthetic import cohort as synthetic_data
from tests.helpers import preprocess_volumes, tiny_config

PID = "BraTS20_Training_001"
SHAPE = (48, 48, 40)


def _shifted_head():
    """A tiny patient rolled 6 voxels along x, with a tumour ball added at the brain's far x edge."""
    patient = synthetic_data.make_patient(PID, 1, SHAPE, "HGG", seed=3)
    volumes = {m: np.roll(v, 6, axis=0) for m, v in patient.images.items()}
    seg = np.roll(patient.seg, 6, axis=0)
    brain = np.roll(patient.brain_mask, 6, axis=0)
    edge = int(np.flatnonzero(brain.any(axis=(1, 2)))[-1])
    ball = np.zeros(SHAPE, bool)
    ball[edge - 2:edge + 1, 22:26, 18:22] = True
    seg[ball & brain] = 2
    volumes["seg"] = seg.astype(np.uint8)
    return volumes, patient.affine


def _run(tmp_path, volumes, affine, **overrides):
    return preprocess_volumes(tmp_path, PID, volumes, affine, **overrides)


def test_the_brain_crop_keeps_a_tumour_at_the_edge_and_inverts(tmp_path):
    volumes, affine = _shifted_head()
    done = _run(tmp_path, volumes, affine, **{"crop.mode": "brain", "crop.size": (48, 48, 48)})
    assert not any(LOST_TUMOUR in w for w in done.warnings)
    truth = labels.to_classes(volumes["seg"], "brats2020")
    classes = done.record.mask.argmax(-1).astype(np.uint8)
    assert np.count_nonzero(classes) == np.count_nonzero(truth)
    np.testing.assert_array_equal(done.grid.invert(classes), truth)
    assert done.record.crop_box[2] == (-4, 44)  # z padded to the record shape around the brain


def test_the_seeds_fixed_box_by_name_loses_it_and_says_so(tmp_path):
    volumes, affine = _shifted_head()
    box = ((10, 38), (10, 38), (1, 38))  # the seeds' 48:192 x 48:192 x 5:149, scaled to 48x48x40
    done = _run(tmp_path, volumes, affine, **{"crop.mode": "fixed", "crop.box": box})
    assert any(LOST_TUMOUR in w for w in done.warnings)


def test_brain_box_is_centred_on_the_brain_and_the_spec_reads_it():
    mask = np.zeros((60, 50, 40), bool)
    mask[30:58, 5:30, 10:30] = True
    box = volume_ops.brain_box(mask, (32, 32, 32))
    assert box == ((28, 60), (1, 33), (4, 36))  # shifted back inside x; padded nowhere
    cfg = tiny_config(**{"crop.mode": "brain", "crop.size": (32, 32, 32)})
    spec = PreprocessingSpec.from_config(cfg)
    assert spec.crop_shape == spec.min_source_shape == (32, 32, 32) and spec.describe_crop() == "brain 32x32x32"
