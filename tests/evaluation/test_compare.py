"""Paired comparison of two score files (evaluation.comparison, python -m evaluation.compare)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from evaluation import comparison
from tests.helpers import ROOT

A = "patient,dice_WT,hd95_WT,lesion_dice_ET\np1,0.80,10,0.5\np2,0.90,4,\np3,0.70,20,0.7\np4,0.60,8,0.9\n"
B = "patient,dice_WT,hd95_WT,lesion_dice_ET\np1,0.90,6,0.6\np2,0.95,4,0.4\np3,0.80,10,0.8\np5,0.99,1,1.0\n"


def test_a_constant_improvement_has_a_zero_width_interval_around_it():
    """B beats A by 0.1, 0.05, 0.1 Dice on the three shared patients (p4 and p5 are
    in one file only): mean difference (0.1 + 0.05 + 0.1)/3 = 0.0833; every bootstrap
    mean lies between the smallest and largest difference, so the interval is
    inside [0.05, 0.1] and excludes 0.  HD95 6-10, 4-4, 10-20: B better twice, one tie."""
    a, b = comparison.read_scores(A), comparison.read_scores(B)
    dice = comparison.paired(a, b, "dice_WT", rounds=2000)
    assert dice["n"] == 3 and dice["mean_diff"] == pytest.approx(0.25 / 3)
    assert 0.05 - 1e-12 <= dice["ci_low"] <= dice["ci_high"] <= 0.1 + 1e-12
    hd = comparison.paired(a, b, "hd95_WT", rounds=2000)
    assert hd["lower_is_better"] and (hd["b_better"], hd["b_worse"], hd["ties"]) == (2, 0, 1)
    assert hd["mean_diff"] == pytest.approx(-14 / 3)


def test_a_patient_with_an_empty_cell_is_left_out_of_that_metric_only():
    """p2 has no lesion-wise ET score in A: lesion_dice_ET pairs p1 and p3 only
    (differences +0.1, +0.1), dice_WT still pairs three patients."""
    a, b = comparison.read_scores(A), comparison.read_scores(B)
    et = comparison.paired(a, b, "lesion_dice_ET", rounds=500)
    assert et["n"] == 2 and et["mean_diff"] == pytest.approx(0.1)
    assert comparison.default_columns(a, b) == ["dice_WT", "hd95_WT", "lesion_dice_ET"]


def test_the_bootstrap_interval_is_reproducible_and_widens_with_spread():
    """Same seed, same interval; differences of -1 and +1 give an interval around 0."""
    assert comparison.bootstrap_ci([0.1, -0.2, 0.3], seed=3) == comparison.bootstrap_ci([0.1, -0.2, 0.3], seed=3)
    low, high = comparison.bootstrap_ci([-1.0, 1.0] * 10)
    assert low < 0 < high


def test_compare_cli_prints_the_table_and_writes_json(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "scores.csv").write_text(A)
    (tmp_path / "b" / "scores.csv").write_text(B)
    result = subprocess.run([sys.executable, "-m", "evaluation.compare", str(tmp_path / "a" / "scores.csv"),
                             str(tmp_path / "b" / "scores.csv"), f"--output={tmp_path}/diff.json", "--rounds=500"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dice_WT" in result.stdout and "+0.0833" in result.stdout and "95% CI" in result.stdout
    saved = json.loads((tmp_path / "diff.json").read_text())
    assert [r["column"] for r in saved["results"]] == ["dice_WT", "hd95_WT", "lesion_dice_ET"]


def _compare(tmp_path, *flags_):
    for name, text in (("a", A), ("b", B)):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "scores.csv").write_text(text)
    return subprocess.run([sys.executable, "-m", "evaluation.compare", str(tmp_path / "a" / "scores.csv"),
                           str(tmp_path / "b" / "scores.csv"), "--rounds=200", *flags_],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_compare_output_dir_writes_comparison_json_and_output_still_works_with_a_warning(tmp_path):
    new = _compare(tmp_path, f"--output_dir={tmp_path}/out")
    assert new.returncode == 0 and "deprecated" not in new.stderr, new.stderr[-2000:]
    by_dir = json.loads((tmp_path / "out" / "comparison.json").read_text())
    old = _compare(tmp_path, f"--output={tmp_path}/diff.json")
    assert old.returncode == 0, old.stderr[-2000:]
    assert "warning: --output is deprecated; use --output_dir" in old.stderr
    assert json.loads((tmp_path / "diff.json").read_text()) == by_dir


def test_compare_refuses_output_and_output_dir_together_with_the_error_exit(tmp_path):
    both = _compare(tmp_path, f"--output_dir={tmp_path}/out", f"--output={tmp_path}/diff.json")
    assert both.returncode == 2
    assert "error: pass --output_dir only" in both.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "diff.json").exists()
