"""trainer.train's command line: --data_dir (its spelling of --config.data_dir) and the checks before training (one TensorFlow import per case)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def _train(tmp_path, *flags_):
    return subprocess.run([sys.executable, "-m", "trainer.train", "--config=configs/train/tiny_cpu.py",
                           f"--workdir={tmp_path / 'run'}", *flags_], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_data_dir_and_a_different_config_data_dir_are_refused_before_training(tmp_path):
    done = _train(tmp_path, f"--data_dir={tmp_path / 'a'}", f"--config.data_dir={tmp_path / 'b'}")
    assert done.returncode == 2
    assert f"error: --data_dir={tmp_path / 'a'} and --config.data_dir={tmp_path / 'b'} disagree" in done.stderr
    assert not (tmp_path / "run").exists()


def test_data_dir_reaches_the_training_config(tmp_path):
    """An empty folder given as --data_dir is what training refuses (it has no manifest), with the error exit."""
    (tmp_path / "empty").mkdir()
    done = _train(tmp_path, f"--data_dir={tmp_path / 'empty'}")
    assert done.returncode == 2 and "error: " in done.stderr
    assert str(tmp_path / "empty") in done.stderr


def test_a_tta_mode_that_does_not_exist_is_an_error_exit_before_training(tmp_path):
    (tmp_path / "empty").mkdir()  # never read: the TTA mode is checked first
    done = _train(tmp_path, f"--data_dir={tmp_path / 'empty'}", "--config.inference_choice.prediction_tta=mirrors")
    assert done.returncode == 2
    assert "error: inference_choice.prediction_tta: unknown TTA mode(s) mirrors" in done.stderr
    assert not (tmp_path / "run").exists()
