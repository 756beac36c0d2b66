"""The same job on every runner it must run on gives the same bytes.

FnApiRunner in-process is the reference; the multi-process FnApiRunner and
Beam's DaskRunner on a fresh ``distributed.LocalCluster`` (two worker
processes on 127.0.0.1, started for this test module and closed after) must
write byte-identical shards, manifest and errors.jsonl, bad patients included.
"""

from __future__ import annotations

import os
import pathlib

import nibabel as nib
import numpy as np
import pytest

from beam_pipeline import launch
from synthetic import cohort as synthetic_data
from tests.helpers import IN_PROCESS, MULTI_PROCESS, TINY_SHAPE, local_dask_client, run_pipeline

OUTPUTS = ("manifest.json", "errors.jsonl")


@pytest.fixture(scope="module")
def mixed_cohort(tmp_path_factory) -> pathlib.Path:
    """Five good patients and three bad ones (a missing file, a corrupt file, an N4 failure)."""
    from shared.nifti_io import nifti_bytes

    root = tmp_path_factory.mktemp("mixed_cohort")
    synthetic_data.write_cohort(str(root), 8, shape=TINY_SHAPE, seed=5, lgg_fraction=0.25)
    ids = [synthetic_data.patient_id_for(i) for i in range(1, 9)]
    (root / ids[5] / f"{ids[5]}_t2.nii.gz").unlink()
    (root / ids[6] / f"{ids[6]}_flair.nii.gz").write_bytes(os.urandom(3000))
    blank = root / ids[7] / f"{ids[7]}_t1ce.nii.gz"
    blank.write_bytes(nifti_bytes(np.zeros(TINY_SHAPE, np.int16), nib.load(blank).affine))
    return root


@pytest.fixture(scope="module")
def reference(mixed_cohort, tmp_path_factory) -> launch.Summary:
    return run_pipeline(mixed_cohort, tmp_path_factory.mktemp("reference"), IN_PROCESS)


@pytest.fixture(scope="module")
def dask_address():
    with local_dask_client() as client:
        yield client.scheduler.address


def _files(dataset_dir: str) -> dict[str, bytes]:
    folder = pathlib.Path(dataset_dir)
    names = list(OUTPUTS) + sorted(p.name for p in folder.glob("*.tfrecord*"))
    return {name: (folder / name).read_bytes() for name in names}


def _assert_same_bytes(summary: launch.Summary, reference: launch.Summary) -> None:
    assert summary.version_id == reference.version_id
    assert _files(summary.dataset_dir) == _files(reference.dataset_dir)


def test_the_reference_run_dead_letters_the_bad_patients(reference):
    assert reference.failed_patients == 3
    assert {f["stage"] for f in reference.failures} == {"discover", "load", "n4"}
    assert sum(reference.patients.values()) == 5


def test_multi_process_fnapi_gives_the_same_bytes(mixed_cohort, reference, tmp_path):
    _assert_same_bytes(run_pipeline(mixed_cohort, tmp_path, MULTI_PROCESS), reference)


def test_dask_gives_the_same_bytes(mixed_cohort, reference, dask_address, tmp_path):
    args = ["--runner=DaskRunner", f"--dask_client_address={dask_address}", "--dask_partition_size=1"]
    summary = run_pipeline(mixed_cohort, tmp_path, args)
    _assert_same_bytes(summary, reference)
    assert summary.run["patients_ok"] == 5 and summary.run["patients_failed"] == 2  # + 1 found at discovery


def test_isolation_on_dask_is_refused_before_the_job_starts(mixed_cohort, dask_address, tmp_path):
    args = ["--runner=DaskRunner", f"--dask_client_address={dask_address}"]
    with pytest.raises(ValueError, match="runtime.isolate is not supported on DaskRunner"):
        run_pipeline(mixed_cohort, tmp_path, args, **{"runtime.isolate": True})
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def gcs():
    """A GCS emulator on 127.0.0.1 for this module (Beam's FileSystems and workers follow it), stopped after."""
    pytest.importorskip("gcp_storage_emulator")
    pytest.importorskip("apache_beam.io.gcp.gcsio")
    from tests.gcs_emulator import gcs_emulator

    with gcs_emulator(buckets=("brats-test",)) as emulator:
        yield emulator


def test_gs_to_gs_gives_a_verified_version_with_the_local_shard_bytes(gcs, tiny_dataset, tmp_path):
    from shared import manifest as manifest_lib
    from shared import storage

    cohort = "gs://brats-test/cohort"
    synthetic_data.write_cohort(cohort, 6, shape=TINY_SHAPE, seed=3, lgg_fraction=0.34)  # the tiny cohort's bytes
    summary = run_pipeline(cohort, "gs://brats-test/datasets", IN_PROCESS)
    # Same bytes in a bucket fingerprint the same: the MD5s came from the bucket's metadata.
    assert summary.version_id == tiny_dataset.version_id
    assert summary.dataset_dir == f"gs://brats-test/datasets/synthetic/{summary.version_id}"
    assert manifest_lib.verify(summary.dataset_dir) == []
    local = _files(tiny_dataset.dataset_dir)
    remote = {name: storage.read_bytes(storage.join(summary.dataset_dir, name)) for name in local}
    assert remote == local
    assert not storage.match(storage.join(summary.dataset_dir, "_staging", "*"))


def test_batch_prediction_on_dask_writes_what_fnapi_writes(tiny_model, tiny_cohort, dask_address, tmp_path):
    """Batch prediction's graph (failures as values, summary after GroupByKey) runs on Dask too."""
    import json

    from serving import batch_predict
    from tests.serving.test_predict import _bad_cohort, _check_bad_cohort_summary

    folders = _bad_cohort(tiny_cohort, tmp_path / "in")
    outputs = {}
    for where, args in (("fnapi", IN_PROCESS),
                        ("dask", ["--runner=DaskRunner", f"--dask_client_address={dask_address}",
                                  "--dask_partition_size=1"])):
        options = batch_predict.Options(str(tiny_model), str(tmp_path / where), pictures=False)
        summary = batch_predict.predict_beam(options, folders, args)
        _check_bad_cohort_summary(summary, tmp_path / where)
        outputs[where] = {p.name: p.read_bytes() for p in (tmp_path / where).glob("*.nii.gz")}
        outputs[where]["errors.jsonl"] = (tmp_path / where / "errors.jsonl").read_bytes()
        reports = {p.name: json.loads(p.read_text()) for p in (tmp_path / where).glob("BraTS*.json")}
        for report in reports.values():
            report.pop("seconds")
        outputs[where]["reports"] = reports
    assert len([n for n in outputs["fnapi"] if n.endswith(".nii.gz")]) == 2
    assert outputs["dask"] == outputs["fnapi"]
