"""Prediction with hostile or mislabelled input (issue 21): crafted headers fail their patient at `load`,
files named for a challenge numbered otherwise are refused unless --allow_other_challenge."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from preprocessing.patient import PatientError
from serving import batch_predict, inputs, predictor as predictor_lib
from shared import layouts
from tests import hostile
from tests.helpers import ROOT


def _named(tiny_cohort, root, pid: str, challenge: str):
    layout = layouts.get_layout(challenge)
    folder = root / pid
    folder.mkdir(parents=True)
    for modality in layouts.MODALITIES:
        shutil.copy(tiny_cohort / "BraTS20_Training_001" / f"BraTS20_Training_001_{modality}.nii.gz",
                    folder / layout.expected_name(pid, modality))
    return folder


def test_crafted_headers_fail_their_patient_and_the_rest_is_predicted(stub_model, tiny_cohort, tmp_path):
    root = tmp_path / "in"
    for pid in ("BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003"):
        shutil.copytree(tiny_cohort / pid, root / pid)
    (root / "BraTS20_Training_002" / "BraTS20_Training_002_flair.nii.gz").write_bytes(hostile.claims_cube(1024, fill_bytes=2 << 20))
    (root / "BraTS20_Training_003" / "BraTS20_Training_003_t2.nii.gz").write_bytes(hostile.negative_dims())
    options = batch_predict.Options(str(stub_model), str(tmp_path / "out"), pictures=False)
    summary = batch_predict.predict_local(options, sorted(str(p) for p in root.iterdir()), echo=lambda *_: None)
    assert [d["patient"] for d in summary.predicted] == ["BraTS20_Training_001"]
    failures = {f["patient"]: f for f in summary.failures}
    assert failures["BraTS20_Training_002"]["stage"] == "load"
    assert failures["BraTS20_Training_002"]["file"] == "BraTS20_Training_002_flair.nii.gz"
    assert "1024x1024x1024 int16" in failures["BraTS20_Training_002"]["reason"]
    assert "must be > 0" in failures["BraTS20_Training_003"]["reason"]


def test_a_ped_folder_is_refused_by_a_2020_model_naming_both_numberings(stub_model, tiny_cohort, tmp_path):
    folder = _named(tiny_cohort, tmp_path, "BraTS-PED-00001-000", "brats2024_ped")
    predictor = predictor_lib.load_predictor(str(stub_model))
    with pytest.raises(PatientError, match=r"BraTS 2024 PED .*\(labels 1 ET, 2 NETC, 3 CC, 4 ED\).*"
                                           r"BraTS 2020 .*labels 1 NCR, 2 ED, 4 ET.*--allow_other_challenge"):
        inputs.source_from_folder(str(folder), predictor)
    source, convention = inputs.source_from_folder(str(folder), predictor, allow_other_challenge=True)
    assert convention == "brats2020" and set(source.files) == set(layouts.MODALITIES)


def test_the_command_states_the_challenge_and_takes_the_flag(stub_model, tiny_cohort, tmp_path):
    folder = _named(tiny_cohort, tmp_path / "in", "BraTS-PED-00001-000", "brats2024_ped")
    cmd = [sys.executable, "-m", "serving.predict", f"--model={stub_model}", f"--input={folder}",
           f"--output_dir={tmp_path}/out", "--nopictures"]
    refused = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "Challenge: BraTS 2020" in refused.stdout
    assert "--allow_other_challenge" in (tmp_path / "out" / "errors.jsonl").read_text()
    allowed = subprocess.run(cmd + ["--allow_other_challenge"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert (tmp_path / "out" / "BraTS-PED-00001-000.nii.gz").exists()
