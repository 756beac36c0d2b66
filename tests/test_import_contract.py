"""The layered import contract (.importlinter): it holds, and it sees an upward import, deferred ones included."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

LINT_IMPORTS = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                "sys.exit(lint_imports_command())", "--no-cache"]


def _packages() -> list[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    return config["importlinter"]["root_packages"].split()


def _lint(cwd) -> subprocess.CompletedProcess:
    return subprocess.run(LINT_IMPORTS, cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def _copy_of_the_house(tmp_path):
    """The packages' Python files and the contract, in a folder of their own (the checkout stays untouched)."""
    for package in _packages():
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_import_contract_holds():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, line, arrow", [
    # deferred, inside a function: the kind of import that hid trainer <-> serving before
    ("shared/storage.py", "def _upward():\n    from app import session  # noqa: F401\n", "shared.storage -> app.session"),
    ("beam_pipeline/launch.py", "def _sideways():\n    from trainer import data  # noqa: F401\n",
     "beam_pipeline.launch -> trainer.data"),
    ("trainer/training.py", "def _upward():\n    from serving import prediction  # noqa: F401\n",
     "trainer.training -> serving.prediction"),
])
def test_an_upward_or_sideways_import_breaks_the_contract(tmp_path, module, line, arrow):
    house = _copy_of_the_house(tmp_path)
    with open(house / module, "a") as f:
        f.write("\n\n" + line)
    result = _lint(house)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout and arrow in result.stdout, result.stdout
