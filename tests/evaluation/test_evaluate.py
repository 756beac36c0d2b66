"""Evaluation: a model on its dataset's split, and NIfTI predictions against ground truth."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from shared import metrics
from tests.helpers import ROOT
from evaluation import scoring
from serving import inputs, outputs, prediction, predictor as predictor_lib


def test_model_on_its_validation_split_gives_the_table(tiny_model, tiny_dataset, tmp_path):
    predictor = predictor_lib.load_predictor(str(tiny_model))
    rows, failures = scoring.score_model(predictor, tiny_dataset.dataset_dir, "val", echo=lambda *_: None)
    assert not failures and len(rows) == tiny_dataset.patients["val"]
    report = scoring.write_report(rows, failures, str(tmp_path), {"split": "val"}, predictor.challenge)
    table = scoring.format_report(report)
    for region in ("WT", "TC", "ET"):
        assert region in table
    assert "373.12866" in table  # the conventions are stated
    with open(tmp_path / "scores.csv") as f:
        scored = list(csv.DictReader(f))
    assert {r["patient"] for r in scored} == {r["patient"] for r in rows}
    assert {"dice_WT", "hd95_ET", "volume_pred_TC_ml"} <= set(scored[0])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metrics"]["dice_WT"]["n"] == len(rows) and summary["about"] == {"split": "val"}


def _copy_truth_as_predictions(cohort, pred_dir, pids):
    pred_dir.mkdir()
    for pid in pids:
        shutil.copy(cohort / pid / f"{pid}_seg.nii.gz", pred_dir / f"{pid}.nii.gz")


def test_ground_truth_scored_against_itself_is_perfect(tiny_cohort, tmp_path):
    pids = sorted(p.name for p in tiny_cohort.iterdir() if p.name.startswith("BraTS20"))
    _copy_truth_as_predictions(tiny_cohort, tmp_path / "preds", pids[:-1])
    rows, failures, _ = scoring.score_folders(str(tmp_path / "preds"), str(tiny_cohort), echo=lambda *_: None)
    assert len(rows) == len(pids) - 1
    for row in rows:
        for region in ("WT", "TC", "ET"):
            assert row[f"dice_{region}"] == 1.0 and row[f"hd95_{region}"] == 0.0
    assert [(f["patient"], f["stage"]) for f in failures] == [(pids[-1], "prediction")]


def test_a_prediction_of_the_wrong_shape_is_named(tiny_cohort, tmp_path):
    pid = "BraTS20_Training_002"
    (tmp_path / "preds").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), np.eye(4)), tmp_path / "preds" / f"{pid}.nii.gz")
    rows, failures, _ = scoring.score_folders(str(tmp_path / "preds"), str(tiny_cohort), echo=lambda *_: None)
    bad = [f for f in failures if f["patient"] == pid][0]
    assert bad["file"] == f"{pid}.nii.gz" and "differs from the ground truth" in bad["reason"]


def test_prediction_from_raw_files_scores_like_the_record(tiny_model, tiny_cohort, tmp_path):
    """predict (raw NIfTI) -> evaluate --pred_dir equals evaluate --model on the same patient."""
    predictor = predictor_lib.load_predictor(str(tiny_model))
    pid = "BraTS20_Training_001"
    source, convention = inputs.source_from_folder(str(tiny_cohort / pid), predictor)
    pred = prediction.predict_patient(predictor, source, convention)
    outputs.write_outputs(pred, str(tmp_path / "preds"), predictor, pictures=False)
    rows, _, challenge = scoring.score_folders(str(tmp_path / "preds"), str(tiny_cohort), echo=lambda *_: None)
    truth = nib.load(tiny_cohort / pid / f"{pid}_seg.nii.gz")
    from shared import labels

    assert challenge.name == "brats2020"
    expected = metrics.score_patient(pred.classes, labels.to_classes(np.asarray(truth.dataobj), "brats2020"),
                                     challenge, (1.0, 1.0, 1.0))
    assert [r for r in rows if r["patient"] == pid][0]["dice_WT"] == expected["dice_WT"]


def test_evaluate_cli_prints_the_table(tiny_cohort, tmp_path):
    pids = sorted(p.name for p in tiny_cohort.iterdir() if p.name.startswith("BraTS20"))
    _copy_truth_as_predictions(tiny_cohort, tmp_path / "preds", pids)
    result = subprocess.run(
        [sys.executable, "-m", "evaluation.evaluate", f"--pred_dir={tmp_path}/preds", f"--truth_dir={tiny_cohort}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1.000±0.000" in result.stdout and f"n = {len(pids)} patients" in result.stdout
    assert (tmp_path / "preds" / "evaluation" / "scores.csv").exists()


# ------------------------------------------------------- evaluate --model in source space


def _rows_by_patient(rows):
    """Rows keyed by patient, as JSON text (NaN equals NaN, every float compared exactly)."""
    return {r["patient"]: json.dumps(r, sort_keys=True, default=str) for r in rows}


def _cohort_with_tumour_outside_the_crop(tiny_cohort, tiny_dataset, tmp_path):
    """A copy of the cohort in which one val patient has oedema at a voxel outside its crop box."""
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort)
    record = next(scoring.records_of_split(tiny_dataset.dataset_dir, "val"))
    pid = record.patient_id
    seg_path = cohort / pid / f"{pid}_seg.nii.gz"
    seg = nib.load(seg_path)
    values = np.asarray(seg.dataobj).astype(np.uint8)
    inside = np.zeros(values.shape, bool)
    inside[tuple(slice(lo, hi) for lo, hi in record.crop_box)] = True
    outside = np.argwhere(~inside & (values == 0))[0]
    values[tuple(outside)] = 2
    nib.save(nib.Nifti1Image(values, seg.affine, seg.header), seg_path)
    return cohort, pid


def test_evaluate_model_in_source_space_equals_predict_then_evaluate_pred_dir(stub_model, tiny_cohort, tiny_dataset,
                                                                              tmp_path):
    from serving import batch_predict

    cohort, moved = _cohort_with_tumour_outside_the_crop(tiny_cohort, tiny_dataset, tmp_path)
    predictor = predictor_lib.load_predictor(str(stub_model))
    data_dir = tiny_dataset.dataset_dir
    rows, failures = scoring.score_model_in_source_space(predictor, data_dir, "val", [str(cohort)],
                                                            echo=lambda *_: None)
    val = scoring.split_patients(data_dir, "val")
    assert not failures and sorted(r["patient"] for r in rows) == sorted(val)

    options = batch_predict.Options(model_path=str(stub_model), output_dir=str(tmp_path / "preds"), pictures=False)
    batch_predict.predict_local(options, [str(cohort / pid) for pid in val], echo=lambda *_: None)
    by_folders, _, _ = scoring.score_folders(str(tmp_path / "preds"), str(cohort), echo=lambda *_: None)
    assert _rows_by_patient(rows) == {p: r for p, r in _rows_by_patient(by_folders).items() if p in val}

    # the records' cropped grid never sees the voxel outside the box: there the truth is one voxel smaller
    cropped, _ = scoring.score_model(predictor, data_dir, "val", echo=lambda *_: None)
    source_row = next(r for r in rows if r["patient"] == moved)
    cropped_row = next(r for r in cropped if r["patient"] == moved)
    assert source_row["volume_truth_WT_ml"] == pytest.approx(cropped_row["volume_truth_WT_ml"] + 0.001)
    assert source_row["dice_WT"] < cropped_row["dice_WT"]


def test_a_bug_while_scoring_in_source_space_stops_the_evaluation(stub_model, tiny_cohort, tiny_dataset,
                                                                  monkeypatch):
    """A TypeError is this code's bug: it propagates instead of listing every patient as failed."""
    def a_bug(*args, **kwargs):
        raise TypeError("'NoneType' object is not subscriptable")

    predictor = predictor_lib.load_predictor(str(stub_model))
    monkeypatch.setattr(prediction, "predict_patient", a_bug)
    with pytest.raises(TypeError, match="NoneType"):
        scoring.score_model_in_source_space(predictor, tiny_dataset.dataset_dir, "val", [str(tiny_cohort)],
                                               echo=lambda *_: None)


def test_the_raw_cohort_comes_from_run_json_or_input(tiny_cohort, tiny_dataset, tmp_path):
    assert scoring.cohort_folders(tiny_dataset.dataset_dir) == [str(tiny_cohort)]
    assert scoring.cohort_folders(tiny_dataset.dataset_dir, [str(tmp_path)]) == [str(tmp_path)]
    with pytest.raises(FileNotFoundError, match="pass --input="):
        scoring.cohort_folders(tiny_dataset.dataset_dir, [str(tmp_path / "moved")])
    with pytest.raises(FileNotFoundError, match="no run.json"):
        scoring.cohort_folders(str(tmp_path))
