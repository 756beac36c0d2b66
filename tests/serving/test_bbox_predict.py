"""Prediction for a model trained on bbox records (a shape per patient): back on each patient's source grid.

The ``volume`` window is each record's own whole shape (there is no one crop
shape); ``patch`` slides the training patch, padding a record smaller than
it.  A pointwise stub says exactly where every class must land; the tiny
U-Net trained on the mixed cohort runs both windows on the smallest and the
largest patient.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from serving import inputs, prediction, predictor as predictor_lib
from shared import volume_ops
from tests.helpers import MIXED_SHAPES, stub_classes, write_stub_run


@pytest.fixture(scope="module")
def bbox_stub(bbox_dataset, tmp_path_factory):
    """The stub model as a run trained 'on' the bbox dataset with 16^3 patches."""
    return write_stub_run(tmp_path_factory.mktemp("bbox_stub_run"), bbox_dataset.dataset_dir)


def _patients(cohort):
    return sorted(p for p in cohort.iterdir() if p.is_dir() and p.name.startswith("BraTS20_"))


def test_the_volume_window_is_each_records_whole_shape():
    from configs.preprocess import default

    cfg = default.get_config().to_dict()  # bbox: no one crop shape
    assert predictor_lib.window_size("volume", (128, 128, 128), cfg) == predictor_lib.WHOLE_RECORD
    assert predictor_lib.window_size(None, None, cfg) == predictor_lib.WHOLE_RECORD  # no patch recorded
    assert predictor_lib.window_size("patch", (128, 128, 128), cfg) == (128, 128, 128)
    assert predictor_lib.window_text(predictor_lib.WHOLE_RECORD) == "whole record"


@pytest.mark.parametrize("window", ["volume", "patch"])
def test_the_stub_lands_on_each_patients_source_grid(bbox_stub, bbox_cohort, window):
    predictor = predictor_lib.load_predictor(bbox_stub, window=window)
    assert predictor.window == ((16, 16, 16) if window == "patch" else predictor_lib.WHOLE_RECORD)
    shapes = set()
    for folder in _patients(bbox_cohort):
        source, convention = inputs.source_from_folder(str(folder), predictor)
        record = prediction.prepare(predictor, source, convention).record
        shapes.add(record.image.shape[:3])
        pred = prediction.predict_patient(predictor, source, convention)
        assert pred.classes.shape == nib.load(source.files["flair"]).shape
        expected = volume_ops.uncrop(stub_classes(record.image), record.crop_box, record.original_shape)
        np.testing.assert_array_equal(pred.classes, expected)
    assert len(shapes) > 2  # records of several shapes went through


@pytest.mark.parametrize("window", ["volume", "patch"])
def test_the_trained_model_predicts_every_record_shape_on_its_grid(bbox_model, bbox_cohort, window):
    predictor = predictor_lib.load_predictor(str(bbox_model), window=window)
    assert predictor.window == ((32, 32, 32) if window == "patch" else predictor_lib.WHOLE_RECORD)
    folders = _patients(bbox_cohort)
    for index in (MIXED_SHAPES.index((32, 32, 32)), MIXED_SHAPES.index((64, 48, 40))):  # smallest, largest
        source, convention = inputs.source_from_folder(str(folders[index]), predictor)
        pred = prediction.predict_patient(predictor, source, convention)
        assert pred.classes.shape == MIXED_SHAPES[index]
        assert pred.classes.dtype == np.uint8 and pred.classes.max() < 4
