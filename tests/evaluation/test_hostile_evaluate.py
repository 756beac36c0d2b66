"""Evaluation reads truth and predictions through the bounded reader (issue 21): a crafted file fails its
patient with the file and the reason; the others are scored."""

import shutil

from evaluation import scoring
from tests import hostile


def test_crafted_prediction_and_truth_fail_their_patient_only(tiny_cohort, tmp_path):
    truth, preds = tmp_path / "truth", tmp_path / "preds"
    preds.mkdir()
    pids = ("BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003")
    for pid in pids:
        shutil.copytree(tiny_cohort / pid, truth / pid)
        shutil.copy(tiny_cohort / pid / f"{pid}_seg.nii.gz", preds / f"{pid}.nii.gz")
    (preds / "BraTS20_Training_002.nii.gz").write_bytes(hostile.claims_cube(1024, fill_bytes=2 << 20))
    (truth / pids[2] / f"{pids[2]}_seg.nii.gz").write_bytes(hostile.truncated_gzip((48, 48, 40)))
    rows, failures, _ = scoring.score_folders(str(preds), str(truth), echo=lambda *_: None)
    assert [r["patient"] for r in rows] == ["BraTS20_Training_001"]
    by_patient = {f["patient"]: f for f in failures}
    assert "1024x1024x1024 int16" in by_patient["BraTS20_Training_002"]["reason"]
    assert "over the per-volume ceiling" in by_patient["BraTS20_Training_002"]["reason"]
    assert f"{pids[2]}_seg.nii.gz" in by_patient[pids[2]]["reason"]
    assert "truncated" in by_patient[pids[2]]["reason"]
