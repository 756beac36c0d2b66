"""Shared fixtures: tiny synthetic cohorts and a way to run the real pipeline on them."""

from __future__ import annotations

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from beam_pipeline import launch
from synthetic import cohort as synthetic_data  # noqa: E402
from configs.preprocess import synthetic_small  # noqa: E402

TINY_SHAPE = (48, 48, 40)
IN_PROCESS = ["--runner=FnApiRunner"]
MULTI_PROCESS = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def override(cfg, overrides: dict):
    """Set dotted config fields (``{"crop.size": (32, 32, 32)}``) as --config.x=... would."""
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def tiny_config(**overrides) -> dict:
    """The synthetic config shrunk for 48x48x40 volumes, as a plain dict."""
    cfg = synthetic_small.get_config()
    cfg.crop.size = (32, 32, 32)
    cfg.min_brain_voxels = 200
    return override(cfg, overrides).to_dict()


def run_pipeline(input_dir, output_dir, beam_args=IN_PROCESS, **overrides) -> launch.Summary:
    return launch.run(tiny_config(**overrides), str(input_dir), str(output_dir), list(beam_args), echo=lambda *_: None)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> pathlib.Path:
    """Six 48x48x40 patients in the BraTS 2020 layout (shared: never modify it)."""
    root = tmp_path_factory.mktemp("cohort")
    synthetic_data.write_cohort(str(root), 6, shape=TINY_SHAPE, seed=3, lgg_fraction=0.34)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tiny_cohort, tmp_path_factory):
    """The tiny cohort preprocessed once, in-process (shared: never modify it)."""
    out = tmp_path_factory.mktemp("datasets")
    return run_pipeline(tiny_cohort, out)


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset, tmp_path_factory) -> pathlib.Path:
    """A tiny U-Net trained for a few steps on the tiny dataset (its model.keras; shared: never modify it).

    Its quality does not matter: prediction and evaluation tests check shapes,
    geometry, labels and reports, not Dice.
    """
    from configs.train import tiny_cpu
    from trainer import training

    cfg = tiny_cpu.get_config()
    cfg.data_dir = tiny_dataset.dataset_dir
    cfg.patch_size = (16, 16, 16)
    cfg.epochs, cfg.steps_per_epoch = 1, 2
    workdir = tmp_path_factory.mktemp("run")
    outcome = training.train_and_evaluate(cfg, str(workdir), echo=lambda *_: None)
    return pathlib.Path(outcome.model_path)
