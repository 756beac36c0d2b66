"""Every command's mistakes end in one or two lines saying what was wrong and what to type, exit 2 (issue 24).

The commands run here import no TensorFlow (preprocess, generate, verify, versions, compare): the flags
parser and the config file flag are shared (shared/cli.py), so the TensorFlow commands behave the same.
"""

import subprocess
import sys

import pytest

from shared import cli, storage
from tests.helpers import ROOT


def _run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _assert_short_error(done, *expected):
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = done.stderr[done.stderr.index("error: "):].strip().splitlines()
    assert len(errors) <= 2, errors
    for text in expected:
        assert text in errors[0], errors


@pytest.mark.parametrize("mistake,expected", [
    (["--config=configs/preprocess/tiny.py"], ["no such config file", "brats2020.py", "challenge.py"]),
    (["--config=configs/preprocess/challenge.py:brats2024_glio"], ["unknown challenge 'brats2024_glio'", "brats2024_gli,"]),
    (["--config.split.num_fold=3"], ["no field 'num_fold'", "did you mean --config.split.num_folds?"]),
    (["--config=configs/preprocess/brats2020.py", "--config.split.num_fold=3"], ["did you mean --config.split.num_folds?"]),
    (["--config.no_such_field=3"], ["--config.no_such_field: the config has no field 'no_such_field'"]),
])
def test_config_mistakes_are_one_line_errors(tmp_path, mistake, expected):
    done = _run("beam_pipeline.preprocess", *mistake, f"--input={tmp_path}", f"--output_dir={tmp_path / 'out'}")
    _assert_short_error(done, *expected)
    assert done.stderr.strip().endswith(cli.HELP_HINT)


def test_verbose_keeps_the_traceback(tmp_path):
    done = _run("beam_pipeline.preprocess", "--config.split.num_fold=3", "--verbose", f"--input={tmp_path}",
                f"--output_dir={tmp_path / 'out'}")
    assert done.returncode == 2 and "Traceback" in done.stderr and "did you mean" in done.stderr


def test_a_misspelt_input_folder_says_it_does_not_exist(tmp_path):
    (tmp_path / "gli24").mkdir()
    done = _run("beam_pipeline.preprocess", f"--input={tmp_path / 'gil24'}", f"--output_dir={tmp_path / 'out'}")
    _assert_short_error(done, f"{tmp_path / 'gil24'} does not exist", f"did you mean {tmp_path / 'gli24'}?")


def test_an_empty_input_folder_says_it_is_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    done = _run("beam_pipeline.preprocess", f"--input={tmp_path / 'empty'}", f"--output_dir={tmp_path / 'out'}")
    _assert_short_error(done, "is empty")


@pytest.mark.parametrize("args,expected", [
    (["synthetic.generate", "--output_dir=/tmp/never", "--challenge=brats2024_glio"], ["brats2024_gli|"]),
    (["synthetic.generate", "--output_dir=/tmp/never", "--num_patients=0"], ["--num_patients must be >= 1"]),
    (["synthetic.generate", "--output_dir=/tmp/never", "--num_patient=3"], ["Did you mean: num_patients"]),
    (["beam_pipeline.verify", "--data_dir=/no/such/version"], ["/no/such/version does not exist"]),
    (["beam_pipeline.versions", "--output_dir=/no/such/datasets"], ["does not exist", "--output_dir given to preprocess"]),
    (["evaluation.compare", "/no/a/scores.csv", "/no/b/scores.csv"], ["/no/a/scores.csv does not exist"]),
])
def test_other_commands_mistakes_are_one_line_errors(args, expected):
    _assert_short_error(_run(*args), *expected)


def test_unknown_field_names_the_flag_as_typed_and_the_suggestion(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train", "--config.epoch=3"])
    message = cli.describe_config_error(AttributeError('\'epoch\'\nDid you mean "epochs" instead of "epoch"?'),
                                        "config", "configs/train/unet3d.py")
    assert message == "--config.epoch: the config has no field 'epoch'; did you mean --config.epochs?"


def test_folder_problem_names_the_nearest_sibling(tmp_path):
    (tmp_path / "BraTS2024-GLI").mkdir()
    (tmp_path / "empty").mkdir()
    assert storage.folder_problem(str(tmp_path / "BraTS2024-GIL")).endswith(f"did you mean {tmp_path / 'BraTS2024-GLI'}?")
    assert storage.folder_problem(str(tmp_path / "empty")) == f"{tmp_path / 'empty'} is empty"
    assert storage.folder_problem(str(tmp_path)) is None
