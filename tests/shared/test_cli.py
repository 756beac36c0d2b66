"""shared.cli: deprecated flag spellings, the error exit, and one flag vocabulary across the entry points."""

import ast
import pathlib
import subprocess
import sys

import ml_collections
import pytest
from absl import flags

from shared import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]

ENTRY_POINTS = ["beam_pipeline/preprocess.py", "beam_pipeline/verify.py", "beam_pipeline/versions.py",
                "synthetic/generate.py", "trainer/train.py", "trainer/cross_validate.py", "serving/predict.py",
                "evaluation/evaluate.py", "evaluation/compare.py", "evaluation/choose_inference.py"]
DEPRECATED = {"dataset_dir": "data_dir", "layout": "challenge", "output": "output_dir"}


def _flag_values():
    values = flags.FlagValues()
    flags.DEFINE_string("data_dir", None, "A dataset version directory.", flag_values=values)
    cli.deprecated_alias("dataset_dir", "data_dir", values)
    flags.mark_flag_as_required("data_dir", flag_values=values)
    return values


# --------------------------------------------------------------------------
# The error exit
# --------------------------------------------------------------------------


def test_fail_prints_error_to_stderr_and_exits_2(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.fail(FileNotFoundError("no such model: m.keras"))
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert err == "error: no such model: m.keras\n" and out == ""


def test_fail_can_exit_with_another_status(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.fail("no patient is scored in both files", status=1)
    assert exited.value.code == 1
    assert capsys.readouterr().err == "error: no patient is scored in both files\n"


# --------------------------------------------------------------------------
# Deprecated aliases
# --------------------------------------------------------------------------


def test_the_old_spelling_sets_the_new_flag_and_warns_naming_it(capsys):
    values = _flag_values()
    values(["prog", "--dataset_dir=/data/v1"])
    assert values.data_dir == "/data/v1"
    assert capsys.readouterr().err == "warning: --dataset_dir is deprecated; use --data_dir\n"


def test_the_new_spelling_does_not_warn(capsys):
    values = _flag_values()
    values(["prog", "--data_dir=/data/v1"])
    assert values.data_dir == "/data/v1" and capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [["--dataset_dir=/a", "--data_dir=/b"], ["--data_dir=/b", "--dataset_dir=/a"]])
def test_both_spellings_disagreeing_is_an_error(argv):
    with pytest.raises(flags.IllegalFlagValueError, match="pass only --data_dir"):
        _flag_values()(["prog", *argv])


def test_both_spellings_agreeing_are_accepted():
    values = _flag_values()
    values(["prog", "--data_dir=/a", "--dataset_dir=/a"])
    assert values.data_dir == "/a"


def test_a_required_flag_is_satisfied_by_its_old_spelling_and_missing_without_either():
    _flag_values()(["prog", "--dataset_dir=/a"])
    with pytest.raises(flags.IllegalFlagValueError):
        _flag_values()(["prog"])


def test_an_alias_of_an_enum_keeps_its_choices(capsys):
    values = flags.FlagValues()
    flags.DEFINE_enum("challenge", None, ["brats2020", "brats2024_gli"], "Challenge.", flag_values=values)
    cli.deprecated_alias("layout", "challenge", values)
    values(["prog", "--layout=brats2024_gli"])
    assert values.challenge == "brats2024_gli"
    assert "use --challenge" in capsys.readouterr().err
    with pytest.raises(flags.IllegalFlagValueError):
        values(["prog", "--layout=brats1999"])


def test_a_deprecated_string_keeps_its_own_value_and_warns(capsys):
    values = flags.FlagValues()
    flags.DEFINE_string("output_dir", None, "A folder.", flag_values=values)
    holder = cli.DEFINE_deprecated_string("output", "output_dir", "A file.", flag_values=values)
    values(["prog", "--output=diff.json"])
    assert holder.value == "diff.json" and values.output_dir is None
    assert capsys.readouterr().err == "warning: --output is deprecated; use --output_dir\n"
    assert "Deprecated: use --output_dir" in values["output"].help


# --------------------------------------------------------------------------
# --data_dir as the command's spelling of --config.data_dir
# --------------------------------------------------------------------------


def _config(data_dir=""):
    config = ml_collections.ConfigDict({"data_dir": data_dir, "batch_size": 2})
    config.lock()
    return config


def test_data_dir_sets_the_config_field():
    config = _config()
    cli.set_config_field(config, "data_dir", "/data/v1")
    assert config.data_dir == "/data/v1"


def test_without_data_dir_the_config_field_stays():
    config = _config("/data/v0")
    cli.set_config_field(config, "data_dir", None)
    assert config.data_dir == "/data/v0"


def test_data_dir_and_config_data_dir_agreeing_are_accepted():
    config = _config("/data/v1")
    cli.set_config_field(config, "data_dir", "/data/v1")
    assert config.data_dir == "/data/v1"


def test_data_dir_and_config_data_dir_disagreeing_is_an_error_exit(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.set_config_field(_config("/data/v0"), "data_dir", "/data/v1")
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("error: --data_dir=/data/v1 and --config.data_dir=/data/v0 disagree")


# --------------------------------------------------------------------------
# One vocabulary: the flags every entry point defines (read from the source: no TensorFlow imports)
# --------------------------------------------------------------------------


def _defined_flags(path: str) -> dict[str, str]:
    """{flag name: how it is defined} for every flags.DEFINE_*, config_flags.DEFINE_* and cli.* call."""
    found = {}
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            kind = node.func.attr
            if kind.startswith("DEFINE_") or kind == "deprecated_alias":
                found[node.args[0].value] = kind
    return found


FLAGS_BY_ENTRY_POINT = {path: _defined_flags(path) for path in ENTRY_POINTS}


@pytest.mark.parametrize("path", ENTRY_POINTS)
def test_old_spellings_exist_only_as_deprecated_aliases(path):
    for old in DEPRECATED:
        assert FLAGS_BY_ENTRY_POINT[path].get(old) in (None, "deprecated_alias", "DEFINE_deprecated_string"), old


@pytest.mark.parametrize("path,new", [
    ("beam_pipeline/verify.py", "data_dir"), ("trainer/train.py", "data_dir"), ("trainer/cross_validate.py", "data_dir"),
    ("serving/predict.py", "data_dir"), ("evaluation/evaluate.py", "data_dir"),
    ("evaluation/choose_inference.py", "data_dir"), ("evaluation/evaluate.py", "challenge"),
    ("synthetic/generate.py", "challenge"), ("evaluation/compare.py", "output_dir"),
    ("beam_pipeline/preprocess.py", "output_dir"), ("beam_pipeline/versions.py", "output_dir"),
    ("serving/predict.py", "output_dir"), ("evaluation/evaluate.py", "output_dir"),
    ("synthetic/generate.py", "output_dir"),
])
def test_entry_points_define_the_new_names(path, new):
    assert new in FLAGS_BY_ENTRY_POINT[path]


@pytest.mark.parametrize("path,old", [("beam_pipeline/verify.py", "dataset_dir"), ("evaluation/evaluate.py", "layout"),
                                      ("evaluation/compare.py", "output")])
def test_the_old_spellings_still_exist(path, old):
    assert FLAGS_BY_ENTRY_POINT[path][old] in ("deprecated_alias", "DEFINE_deprecated_string")


def test_window_is_always_one_window_and_windows_always_a_list():
    for path, defined in FLAGS_BY_ENTRY_POINT.items():
        assert defined.get("window") in (None, "DEFINE_string"), path
        assert defined.get("windows") in (None, "DEFINE_list"), path
    assert "window" in FLAGS_BY_ENTRY_POINT["serving/predict.py"]
    assert "window" in FLAGS_BY_ENTRY_POINT["evaluation/evaluate.py"]
    assert "windows" in FLAGS_BY_ENTRY_POINT["evaluation/choose_inference.py"]


def test_no_entry_point_copies_the_error_exit():
    for path in ENTRY_POINTS:
        source = (ROOT / path).read_text()
        assert 'print(f"error: ' not in source and 'SystemExit(f"error: {' not in source, path


# --------------------------------------------------------------------------
# The commands themselves (cheap ones: no TensorFlow)
# --------------------------------------------------------------------------


def _run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_verify_takes_data_dir_and_still_the_old_dataset_dir(tmp_path):
    new = _run("beam_pipeline.verify", f"--data_dir={tmp_path}")
    old = _run("beam_pipeline.verify", f"--dataset_dir={tmp_path}")
    assert new.returncode == old.returncode == 1  # no manifest: a mismatch, as before
    assert "manifest.json" in new.stderr and "deprecated" not in new.stderr
    assert "warning: --dataset_dir is deprecated; use --data_dir" in old.stderr and "manifest.json" in old.stderr


def test_verify_help_lists_data_dir():
    shown = _run("beam_pipeline.verify", "--help")
    assert "--data_dir:" in shown.stdout and "Deprecated spelling of --data_dir" in shown.stdout
