"""Crafted NIfTI headers in a cohort (issue 21): each patient is dead-lettered at `load` with its file and
the reason, the others are written, and the job's peak memory stays bounded however much a header claims."""

from __future__ import annotations

import gzip
import json
import pathlib
import subprocess
import sys

import pytest

from synthetic import cohort as synthetic_data
from tests import hostile
from tests.helpers import ROOT, TINY_SHAPE

# patient index -> (modality replaced, crafted bytes, words the reason must hold)
CRAFTED = {
    2: ("flair", lambda: hostile.claims_cube(768, fill_bytes=880 << 10), "768x768x768 int16"),
    3: ("t1", lambda: hostile.claims_cube(1024, fill_bytes=2 << 20), "over the per-volume ceiling"),
    4: ("t2", hostile.negative_dims, "must be > 0"),
    5: ("t1ce", lambda: hostile.wrong_datatype(TINY_SHAPE), "48x48x40 float64"),
    6: ("seg", lambda: hostile.truncated_gzip(TINY_SHAPE), "truncated"),
}
PEAK_BOUND_MB = 1600  # the 768³ file alone took the job from 0.92 GB to 4.1 GB before the bounded reader

# A fresh interpreter runs the job, so its RUSAGE_CHILDREN is this run's alone.
_MEASURE = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
            "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_cohort")
    synthetic_data.write_cohort(str(root), 7, shape=TINY_SHAPE, seed=5, lgg_fraction=0.0)
    for index, (channel, make, _) in CRAFTED.items():
        pid = synthetic_data.patient_id_for(index)
        (root / pid / f"{pid}_{channel}.nii.gz").write_bytes(make())
    # a gzip bomb behind a valid header: the volume is read, the 256 MB of trailing zeros are not
    bombed = synthetic_data.patient_id_for(7)
    t1 = root / bombed / f"{bombed}_t1.nii.gz"
    t1.write_bytes(hostile.bomb(inflated_bytes=256 << 20, volume=gzip.decompress(t1.read_bytes())))
    out = tmp_path_factory.mktemp("hostile_out")
    cmd = [sys.executable, "-c", _MEASURE, sys.executable, "-m", "beam_pipeline.preprocess",
           "--config=configs/preprocess/synthetic_small.py", "--config.crop.size=32,32,32",
           "--config.min_brain_voxels=200", f"--input={root}", f"--output_dir={out}", "--runner=FnApiRunner"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    peak_kb = int(done.stdout.split("PEAK_KB")[-1].split()[0])
    errors = [json.loads(line) for path in pathlib.Path(out).rglob("errors.jsonl")
              for line in path.read_text().splitlines()]
    manifests = list(pathlib.Path(out).rglob("manifest.json"))
    return errors, json.loads(manifests[0].read_text()), peak_kb


def test_each_crafted_file_dead_letters_its_patient_at_load_naming_file_and_reason(hostile_run):
    errors, _, _ = hostile_run
    by_patient = {e["patient"]: e for e in errors}
    assert set(by_patient) == {synthetic_data.patient_id_for(i) for i in CRAFTED}
    for index, (channel, _, words) in CRAFTED.items():
        error = by_patient[synthetic_data.patient_id_for(index)]
        assert error["stage"] == "load", error
        assert error["file"].endswith(f"_{channel}.nii.gz"), error
        assert words in error["reason"], error


def test_the_other_patients_are_written_the_bombed_one_included(hostile_run):
    _, manifest, _ = hostile_run
    written = manifest["splits"]["train"]["patients"] + manifest["splits"]["val"]["patients"]
    assert sorted(written) == [synthetic_data.patient_id_for(i) for i in (1, 7)]


def test_peak_memory_of_the_run_is_bounded(hostile_run):
    _, _, peak_kb = hostile_run
    print(f"peak RSS of the job with crafted headers: {peak_kb / 1024:.0f} MB")
    assert peak_kb / 1024 < PEAK_BOUND_MB
