"""Version ids that name exactly one dataset: code fingerprint, bugs, all-failed runs, the Beam-free core."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from beam_pipeline import launch
from shared import manifest, volume_ops
from tests.helpers import ROOT, TINY_SHAPE, run_pipeline, tiny_config


def test_the_core_imports_without_beam_and_leaves_the_environment_alone():
    code = ("import os, sys; before = dict(os.environ); "
            "import preprocessing.patient, preprocessing.discovery, preprocessing.n4, preprocessing.checksums, "
            "beam_pipeline.staging, shared.storage, shared.manifest, shared.spec, shared.failures, shared.schema; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam')); "
            "print(sorted(k for k in os.environ if os.environ.get(k) != before.get(k)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", "[]"], done.stdout


def test_a_bug_in_a_stage_fails_the_job_and_names_the_stage(tiny_cohort, tmp_path, monkeypatch):
    def buggy_zscore(volume, mask):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(volume_ops, "zscore", buggy_zscore)
    with pytest.raises(Exception, match="bug in stage 'normalize'") as caught:
        run_pipeline(tiny_cohort, tmp_path)
    assert "TypeError" in str(caught.value)
    assert not list(tmp_path.glob("synthetic/*/manifest.json")), "a bug must never complete a version"


def test_a_bug_exits_the_command_non_zero(tiny_cohort, tmp_path):
    # The same bug through the command line (the config names a field the code does not have).
    code = ("import sys; from shared import volume_ops; "
            "volume_ops.zscore = lambda v, m: v.no_such_method(); "
            "from beam_pipeline import preprocess; from absl import app; "
            "sys.argv = ['preprocess', '--config=configs/preprocess/synthetic_small.py', '--config.crop.size=32,32,32', "
            f"'--config.min_brain_voxels=200', '--input={tiny_cohort}', '--output_dir={tmp_path}', "
            "'--runner=FnApiRunner', '--config.runtime.isolate=false']; "
            "app.run(preprocess.main, flags_parser=preprocess.parse_flags)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0
    assert "bug in stage 'normalize'" in done.stderr and "AttributeError" in done.stderr


def test_a_run_where_every_patient_fails_leaves_no_complete_version(tiny_cohort, tmp_path):
    # min_brain_voxels above the volume's size: every patient fails its mask stage (bad input, not a bug).
    too_many = int(np.prod(TINY_SHAPE)) + 1
    with pytest.raises(launch.NoPatientSucceeded, match="no patient could be preprocessed") as caught:
        run_pipeline(tiny_cohort, tmp_path, min_brain_voxels=too_many)
    assert "[mask]" in str(caught.value)
    (version,) = (tmp_path / "synthetic").iterdir()
    assert not (version / "manifest.json").exists()
    assert len((version / "errors.jsonl").read_text().splitlines()) == 6
    # Run again: the version is still not complete, so the job runs again instead of reusing it.
    with pytest.raises(launch.NoPatientSucceeded):
        run_pipeline(tiny_cohort, tmp_path, min_brain_voxels=too_many)


def _plan_in(tree: pathlib.Path, cohort: pathlib.Path, out: pathlib.Path) -> str:
    code = ("import json, sys; from beam_pipeline import launch; from tests.helpers import tiny_config; "
            f"print(launch.plan_dataset(tiny_config(), {str(cohort)!r}, {str(out)!r}).version_id)")
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def test_a_changed_line_in_a_stage_gives_a_new_version_id(tiny_cohort, tmp_path):
    tree = tmp_path / "tree"
    for package in ("preprocessing", "beam_pipeline", "shared", "configs", "tests"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    here = launch.plan_dataset(tiny_config(), str(tiny_cohort), str(tmp_path / "out")).version_id
    assert _plan_in(tree, tiny_cohort, tmp_path / "out") == here  # same code, same id, from another folder
    stage = tree / "preprocessing" / "patient.py"
    stage.write_text(stage.read_text().replace("AFFINE_TOLERANCE = 1e-3", "AFFINE_TOLERANCE = 2e-3"))
    assert _plan_in(tree, tiny_cohort, tmp_path / "out") != here


def test_the_version_id_and_manifest_do_not_depend_on_where_the_cohort_lies(tiny_cohort, tiny_dataset, tmp_path):
    moved = tmp_path / "elsewhere" / "cohort"
    shutil.copytree(tiny_cohort, moved)
    summary = run_pipeline(moved, tmp_path / "out")
    assert summary.version_id == tiny_dataset.version_id
    for name in ("manifest.json", "errors.jsonl"):
        assert (pathlib.Path(summary.dataset_dir) / name).read_bytes() == \
            (pathlib.Path(tiny_dataset.dataset_dir) / name).read_bytes()
    assert manifest.read_run(summary.dataset_dir)["source"] == str(moved)
