"""Scoring part of a cohort (issue 24): one line for the patients without a prediction, and --strict."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from evaluation import scoring
from shared import cli
from tests.helpers import ROOT


def _predict_only(cohort, pred_dir, count):
    pids = sorted(p.name for p in cohort.iterdir() if p.name.startswith("BraTS20"))
    pred_dir.mkdir()
    for pid in pids[:count]:
        shutil.copy(cohort / pid / f"{pid}_seg.nii.gz", pred_dir / f"{pid}.nii.gz")
    return pids


def test_patients_without_a_prediction_are_one_line(tiny_cohort, tmp_path):
    pids = _predict_only(tiny_cohort, tmp_path / "preds", 1)
    rows, failures, challenge = scoring.score_folders(str(tmp_path / "preds"), str(tiny_cohort), echo=lambda *_: None)
    report = scoring.write_report(rows, failures, str(tmp_path / "eval"), {}, challenge)
    printed = scoring.format_report(report)
    assert "no prediction in" not in printed  # the reasons stay in errors.jsonl
    summary = [line for line in printed.splitlines() if "have no prediction" in line]
    assert len(summary) == 1 and summary[0].startswith(f"{len(pids) - 1} patient(s) of the ground truth")
    assert "not scored" not in printed


def test_strict_evaluation_exits_1_when_a_patient_is_not_scored(tiny_cohort, tmp_path):
    _predict_only(tiny_cohort, tmp_path / "preds", 1)
    done = subprocess.run([sys.executable, "-m", "evaluation.evaluate", f"--pred_dir={tmp_path}/preds",
                           f"--truth_dir={tiny_cohort}", "--strict"], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "error: --strict:" in done.stderr and "have no prediction" in done.stdout


@pytest.mark.parametrize("succeeded,failed,strict,status", [(3, 0, True, None), (3, 1, False, None),
                                                             (3, 1, True, 1), (0, 2, False, 1), (0, 0, False, 1)])
def test_many_patient_commands_exit_non_zero_when_all_fail_or_strict(succeeded, failed, strict, status, capsys):
    if status is None:
        cli.exit_for_failures(succeeded, failed, strict, "scored")
        return
    with pytest.raises(SystemExit) as exited:
        cli.exit_for_failures(succeeded, failed, strict, "scored")
    assert exited.value.code == status and capsys.readouterr().err.startswith("error: ")
