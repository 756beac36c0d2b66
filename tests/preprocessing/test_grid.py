"""The core's record of what it did to a patient's grid, and its inverse (preprocessing/grid.py).

Round trips: a scan stored in RAS (the model's orientation is LPS), one at
2 mm resampled to 1 mm, and a crop box that pads past the grid on one axis
and cuts inside it on the others; for labels, a softmax and a region
model's sigmoids.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from preprocessing import grid as grid_lib
from preprocessing.discovery import PatientSource
from preprocessing.patient import preprocess
from shared import geometry, labels, layouts, volume_ops
from synthetic import cohort as synthetic_data
from tests.helpers import TINY_SHAPE, tiny_config

PID = "BraTS20_Training_001"
CHANNELS = ("flair", "t1", "t1ce", "t2", "seg")
LPS = geometry.Expected(orientations=("LPS",), recorded=True)
AT_1MM = geometry.Expected(orientations=("LPS",), resample_mm=(1.0, 1.0, 1.0), recorded=True)


@pytest.fixture(scope="module")
def scan():
    patient = synthetic_data.make_patient(PID, 1, TINY_SHAPE, "HGG", seed=3)
    return dict(patient.images, seg=patient.seg.astype(np.uint8)), patient.affine


def _source(root: pathlib.Path, volumes: dict, affine) -> PatientSource:
    layout = layouts.get_layout("brats2020")
    root.mkdir(parents=True)
    files = {}
    for channel, array in volumes.items():
        path = root / layout.expected_name(PID, channel)
        path.write_bytes(synthetic_data.nifti_bytes(array, affine))
        files[channel] = str(path)
    return PatientSource(PID, "HGG", files, {})


def _ras(volumes: dict, affine):
    turn = geometry.reorientation(affine, TINY_SHAPE, "RAS")
    return {k: turn.forward(v) for k, v in volumes.items()}, turn.affine


def _at_2mm(volumes: dict, affine):
    return ({k: np.ascontiguousarray(v[::2, ::2, ::2]) for k, v in volumes.items()},
            np.asarray(affine, np.float64) @ np.diag([2.0, 2.0, 2.0, 1.0]))


def _softmax(classes: np.ndarray, k: int = 4) -> np.ndarray:
    """A confident softmax peaking at ``classes`` (never exactly one-hot)."""
    probs = np.full(classes.shape + (k,), 0.1 / (k - 1), np.float32)
    np.put_along_axis(probs, classes[..., None].astype(np.intp), 0.9, axis=-1)
    return probs


def _regions(classes: np.ndarray) -> np.ndarray:
    """Sigmoids of BraTS's nested regions (WT, TC, ET) as a region model would answer."""
    return np.stack([classes > 0, np.isin(classes, (1, 3)), classes == 3], axis=-1).astype(np.float32)


def _stored_classes(volumes: dict) -> np.ndarray:
    return labels.to_classes(volumes["seg"], "brats2020")


@pytest.mark.parametrize("codes", ["LPS", "RAS"])
def test_labels_and_probabilities_come_back_on_the_stored_grid(scan, tmp_path, codes):
    volumes, affine = _ras(*scan) if codes == "RAS" else scan
    cfg = tiny_config(**{"n4.enabled": False, "crop.size": (56, 40, 48)})  # pads x and z, cuts y
    done = preprocess(_source(tmp_path / PID, volumes, affine), cfg, expected=LPS)
    grid, record = done.grid, done.record
    assert (grid.reorientation is None) == (codes == "LPS")
    assert grid.source_shape == TINY_SHAPE and geometry.axcodes(grid.affine) == codes
    np.testing.assert_array_equal(grid.affine, affine)
    assert grid.padding[0] == (4, 4) and grid.padding[1] == (0, 0) and not grid.resampled
    classes = record.mask.argmax(-1).astype(np.uint8)
    truth = _stored_classes(volumes)
    inside = grid.invert(np.ones(classes.shape, np.uint8)).astype(bool)
    assert inside.sum() < inside.size, "the crop cuts the grid"

    back = grid.invert(classes)
    assert back.dtype == np.uint8 and back.shape == TINY_SHAPE
    np.testing.assert_array_equal(back, np.where(inside, truth, 0))
    assert not np.any(truth[~inside]), "tumour outside the crop would be lost"

    softmax = grid.invert(_softmax(classes), grid_lib.SOFTMAX)
    np.testing.assert_allclose(softmax, np.where(inside[..., None], _softmax(truth), np.eye(4)[0]), rtol=0, atol=0)
    sigmoid = grid.invert(_regions(classes), grid_lib.SIGMOID)
    np.testing.assert_array_equal(sigmoid, np.where(inside[..., None], _regions(truth), 0.0))


@pytest.mark.parametrize("codes", ["LPS", "RAS"])
def test_a_resampled_scan_is_resampled_back(scan, tmp_path, codes):
    volumes, affine = _at_2mm(*(_ras(*scan) if codes == "RAS" else scan))
    cfg = tiny_config(**{"n4.enabled": False, "resample.enabled": True, "crop.size": (56, 56, 48)})
    done = preprocess(_source(tmp_path / PID, volumes, affine), cfg, expected=AT_1MM)
    grid, record = done.grid, done.record
    assert grid.resampled and grid.source_shape == (24, 24, 20) and grid.grid_shape == TINY_SHAPE
    np.testing.assert_array_equal(grid.affine, affine)
    classes = record.mask.argmax(-1).astype(np.uint8)
    truth = _stored_classes(volumes)

    np.testing.assert_array_equal(grid.invert(classes), truth)  # nearest, 2x up and down: exact
    softmax = grid.invert(_softmax(classes), grid_lib.SOFTMAX)
    assert softmax.shape == (24, 24, 20, 4)
    np.testing.assert_allclose(softmax.sum(-1), 1.0, atol=1e-5)  # renormalised after trilinear resampling
    assert np.mean(softmax.argmax(-1) == truth) > 0.97
    sigmoid = grid.invert(_regions(classes), grid_lib.SIGMOID)
    assert sigmoid.shape == (24, 24, 20, 3) and sigmoid.min() >= 0 and sigmoid.max() <= 1
    assert np.mean((sigmoid > 0.5) == _regions(truth).astype(bool)) > 0.97


def test_outside_the_crop_is_background_absent_or_zero_and_the_padding_is_dropped():
    rng = np.random.default_rng(0)
    box = ((-2, 8), (3, 9), (0, 5))  # pads 2 before x; cuts y and z
    record = grid_lib.GridRecord(source_shape=(6, 12, 8), source_affine=np.eye(4), header=None, reorientation=None,
                                 oriented_shape=(6, 12, 8), grid_shape=(6, 12, 8), crop_box=box)
    assert record.padding == ((2, 2), (0, 0), (0, 0))
    classes = rng.integers(0, 3, size=(6, 12, 8)).astype(np.uint8)
    inside = np.zeros((6, 12, 8), bool)
    inside[:, 3:9, 0:5] = True
    np.testing.assert_array_equal(record.invert(volume_ops.crop(classes, box)), np.where(inside, classes, 0))

    probs = rng.dirichlet(np.ones(3), size=(6, 12, 8)).astype(np.float32)
    softmax = record.invert(volume_ops.crop(probs, box), "softmax")
    np.testing.assert_array_equal(softmax[inside], probs[inside])
    np.testing.assert_array_equal(softmax[~inside], np.tile([1.0, 0.0, 0.0], (int((~inside).sum()), 1)))
    sigmoid = record.invert(volume_ops.crop(probs, box), "sigmoid")
    np.testing.assert_array_equal(sigmoid[inside], probs[inside])
    assert not sigmoid[~inside].any()


def test_an_axis_swap_is_undone_exactly_and_bad_input_is_refused():
    shape = (5, 6, 7)
    lps = synthetic_data.brats_affine(shape)
    stored = lps[:, [2, 0, 1, 3]]  # stored as SLP: axes swapped
    turn = geometry.reorientation(stored, (7, 5, 6), "LPS")
    array = np.arange(np.prod((7, 5, 6)), dtype=np.int32).reshape(7, 5, 6)
    record = grid_lib.GridRecord(source_shape=(7, 5, 6), source_affine=stored, header=None, reorientation=turn,
                                 oriented_shape=shape, grid_shape=shape, crop_box=((0, 5), (0, 6), (0, 7)))
    np.testing.assert_array_equal(record.invert(turn.forward(array)), array)
    np.testing.assert_array_equal(record.affine, stored)
    with pytest.raises(ValueError, match="unknown kind"):
        record.invert(turn.forward(array), "logits")
    with pytest.raises(ValueError, match="not on the"):
        record.invert(array)
