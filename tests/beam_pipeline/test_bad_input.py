"""Every kind of bad input sends its patient to errors.jsonl; the others are written."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from beam_pipeline import pipeline
from synthetic import cohort as synthetic_data
from shared import manifest as manifest_lib
from shared.nifti_io import nifti_bytes
from tests.helpers import IN_PROCESS, MULTI_PROCESS, ROOT, TINY_SHAPE, run_pipeline


def _path(root, pid, channel, ext=".nii.gz") -> pathlib.Path:
    return root / pid / f"{pid}_{channel}{ext}"


def _rewrite(root, pid, channel, array, affine=None):
    path = _path(root, pid, channel)
    affine = nib.load(path).affine if affine is None else affine
    path.write_bytes(nifti_bytes(array, affine))


def _load(root, pid, channel):
    return np.asarray(nib.load(_path(root, pid, channel)).dataobj)


# patient index -> (how it is broken, expected stage, expected file channel or None)
CASES = {
    3: ("missing modality", "discover", "t1ce"),
    4: ("missing segmentation", "discover", "seg"),
    5: ("misnamed segmentation", "discover", "seg"),
    6: ("corrupt file", "load", "flair"),
    7: ("truncated file", "load", "t1"),
    8: ("shape mismatch", "validate", "t2"),
    9: ("affine mismatch", "validate", "t2"),
    10: ("NaN voxels", "validate", "t1"),
    11: ("unexpected label", "validate", "seg"),
    12: ("empty brain", "mask", "flair"),
    13: ("N4 failure on a blank modality", "n4", "t1ce"),
}


def _break(root: pathlib.Path, index: int) -> None:
    pid = synthetic_data.patient_id_for(index)
    kind = CASES[index][0]
    if kind == "missing modality":
        _path(root, pid, "t1ce").unlink()
    elif kind == "missing segmentation":
        _path(root, pid, "seg").unlink()
    elif kind == "misnamed segmentation":
        _path(root, pid, "seg").rename(root / pid / "W39_1998.09.19_Segm.nii.gz")
    elif kind == "corrupt file":
        _path(root, pid, "flair").write_bytes(os.urandom(5000))
    elif kind == "truncated file":
        data = gzip.decompress(_path(root, pid, "t1").read_bytes())
        _path(root, pid, "t1").write_bytes(gzip.compress(data[: len(data) // 2]))
    elif kind == "shape mismatch":
        _rewrite(root, pid, "t2", _load(root, pid, "t2")[:, :, :-2])
    elif kind == "affine mismatch":
        affine = nib.load(_path(root, pid, "t2")).affine.copy()
        affine[0, 3] += 5.0
        _rewrite(root, pid, "t2", _load(root, pid, "t2"), affine)
    elif kind == "NaN voxels":
        t1 = _load(root, pid, "t1").astype(np.float32)
        t1[24, 24, 20] = np.nan
        _rewrite(root, pid, "t1", t1)
    elif kind == "unexpected label":
        seg = _load(root, pid, "seg").astype(np.uint8)
        seg[24, 24, 20] = 5
        _rewrite(root, pid, "seg", seg)
    elif kind == "empty brain":
        for m in synthetic_data.MODALITIES:
            _rewrite(root, pid, m, np.zeros(TINY_SHAPE, np.int16))
    elif kind == "N4 failure on a blank modality":
        _rewrite(root, pid, "t1ce", np.zeros(TINY_SHAPE, np.int16))


@pytest.fixture(scope="module")
def bad_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_cohort")
    synthetic_data.write_cohort(str(root), 13, shape=TINY_SHAPE, seed=11, lgg_fraction=0.25)
    for index in CASES:
        _break(root, index)
    return root


@pytest.fixture(scope="module")
def bad_run(bad_cohort, tmp_path_factory):
    return run_pipeline(bad_cohort, tmp_path_factory.mktemp("bad_out"))


def test_each_bad_patient_lands_in_errors_jsonl_with_stage_and_file(bad_run):
    lines = (pathlib.Path(bad_run.dataset_dir) / "errors.jsonl").read_text().splitlines()
    errors = [json.loads(line) for line in lines]
    by_patient = {e["patient"]: e for e in errors}
    assert len(by_patient) == len(CASES)
    for index, (kind, stage, channel) in CASES.items():
        pid = synthetic_data.patient_id_for(index)
        error = by_patient[pid]
        assert error["stage"] == stage, (kind, error)
        assert error["file"].startswith(f"{pid}_{channel}.nii"), (kind, error)
        assert error["reason"], kind
    assert "W39_1998.09.19_Segm.nii.gz" in by_patient[synthetic_data.patient_id_for(5)]["reason"]
    assert "NaN" in by_patient[synthetic_data.patient_id_for(10)]["reason"]
    assert "[5]" in by_patient[synthetic_data.patient_id_for(11)]["reason"]


def test_good_patients_are_written_and_the_summary_counts_failures(bad_run):
    m = manifest_lib.read_manifest(bad_run.dataset_dir)
    written = m["splits"]["train"]["patients"] + m["splits"]["val"]["patients"]
    assert sorted(written) == [synthetic_data.patient_id_for(i) for i in (1, 2)]
    assert bad_run.failed_patients == len(CASES)
    assert len({f["patient"] for f in m["failed"]}) == len(CASES)
    assert manifest_lib.verify(bad_run.dataset_dir) == []


def test_strict_exits_non_zero_and_prints_the_summary(bad_cohort, tmp_path):
    cmd = [sys.executable, "-m", "beam_pipeline.preprocess", "--config=configs/preprocess/synthetic_small.py",
           "--config.crop.size=32,32,32", "--config.min_brain_voxels=200", f"--input={bad_cohort}",
           f"--output_dir={tmp_path}", "--runner=FnApiRunner", "--strict"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0
    assert f"patients failed: {len(CASES)}" in done.stdout
    assert "--strict" in done.stderr
    relaxed = subprocess.run(cmd[:-1], cwd=ROOT, capture_output=True, text=True)
    assert relaxed.returncode == 0 and "already complete" in relaxed.stdout


@pytest.mark.parametrize("beam_args", [IN_PROCESS, MULTI_PROCESS], ids=["in_process", "multi_process"])
def test_a_native_crash_is_isolated_to_its_patient(tiny_cohort, tmp_path, monkeypatch, beam_args):
    # The victim's isolation subprocess dies of a real SIGSEGV (the pipeline's
    # test hook); a monkeypatch would not reach it, as forkserver children
    # import the code afresh.
    victim = synthetic_data.patient_id_for(2)
    monkeypatch.setenv(pipeline.FAULT_INJECT_SEGFAULT_ENV, victim)
    summary = run_pipeline(tiny_cohort, tmp_path, beam_args, **{"runtime.isolate": True, "runtime.timeout_s": 120})
    assert [f["patient"] for f in summary.failures] == [victim]
    failure = summary.failures[0]
    assert failure["stage"] == "worker"
    assert "BrokenProcessPool" in failure["reason"], failure
    assert sum(summary.patients.values()) == 5


def test_isolation_switches_the_worker_to_forkserver(monkeypatch):
    import multiprocessing

    from apache_beam.internal import pickler

    from beam_pipeline import fingerprint

    monkeypatch.setattr(multiprocessing.context._default_context, "_actual_context", None)
    libraries = fingerprint.library_versions()
    pickler.loads(pickler.dumps(pipeline.PreprocessPatient({}, "/tmp", libraries, isolated=False))).setup()
    assert multiprocessing.get_start_method(allow_none=True) is None
    pickler.loads(pickler.dumps(pipeline.PreprocessPatient({}, "/tmp", libraries, isolated=True))).setup()
    assert multiprocessing.get_start_method(allow_none=True) == "forkserver"


def test_missing_input_folder_is_a_clear_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "beam_pipeline.preprocess", "--config=configs/preprocess/synthetic_small.py",
         f"--input={tmp_path / 'nowhere'}", f"--output_dir={tmp_path}", "--runner=FnApiRunner"],
        cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0
    assert "no patient folders" in done.stderr


def test_a_channel_that_overflows_float16_fails_its_patient_at_encode(tiny_cohort, monkeypatch):
    # z-scores cannot exceed sqrt(voxels), so the overflow is forced: the third
    # channel's normalisation returns values beyond float16's 65504.
    from preprocessing import discovery, patient
    from shared import layouts, volume_ops
    from tests.helpers import tiny_config

    cfg = tiny_config()
    source = discovery.discover(str(tiny_cohort), layouts.get_layout(cfg["layout"]), tuple(cfg["modalities"])).patients[0]
    assert patient.preprocess(source, cfg).record.image.dtype == np.float16  # the patient itself is good
    real, calls = volume_ops.zscore, []

    def overflowing_third_channel(volume, mask):
        calls.append(None)
        return real(volume, mask) * (1e5 if len(calls) == 3 else 1)

    monkeypatch.setattr(volume_ops, "zscore", overflowing_third_channel)
    with pytest.raises(patient.PatientError) as caught:
        patient.preprocess(source, cfg)
    channel = cfg["modalities"][2]
    assert caught.value.stage == "encode" and caught.value.file == f"{source.patient_id}_{channel}.nii.gz"
    assert "not finite in float16" in caught.value.reason
