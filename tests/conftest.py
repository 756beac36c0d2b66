"""Shared fixtures: tiny synthetic cohorts, the real pipeline run on them, a trained tiny model and a stub model.

Helpers that tests import by name live in ``tests/helpers.py``.
"""

from __future__ import annotations

import pathlib

import pytest

from synthetic import cohort as synthetic_data
from tests.helpers import (  # noqa: F401  (ROOT on sys.path first)
    TINY_BBOX, TINY_SHAPE, run_pipeline, write_mixed_cohort, write_stub_run)


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
def bbox_cohort(tmp_path_factory) -> pathlib.Path:
    """Six patients on grids of different sizes (``MIXED_SHAPES``; shared: never modify it)."""
    root = tmp_path_factory.mktemp("bbox_cohort")
    write_mixed_cohort(root)
    return root


@pytest.fixture(scope="session")
def bbox_dataset(bbox_cohort, tmp_path_factory):
    """The mixed cohort preprocessed with crop mode bbox: a record shape per patient (shared: never modify it)."""
    return run_pipeline(bbox_cohort, tmp_path_factory.mktemp("bbox_datasets"),
                        **{**TINY_BBOX, "split.val_fraction": 0.34})


@pytest.fixture(scope="session")
def bbox_model(bbox_dataset, tmp_path_factory) -> pathlib.Path:
    """A tiny U-Net trained a few steps on the bbox dataset with 32^3 patches, its window/TTA chosen (model.keras)."""
    from configs.train import tiny_cpu
    from evaluation import inference_choice
    from trainer import training

    cfg = tiny_cpu.get_config()
    cfg.data_dir = bbox_dataset.dataset_dir
    cfg.epochs, cfg.steps_per_epoch = 1, 3
    cfg.inference_choice.windows = "patch,volume"  # both windows scored on records of every shape
    workdir = tmp_path_factory.mktemp("bbox_run")
    outcome = training.train_and_evaluate(cfg, str(workdir), echo=lambda *_: None,
                                          after_training=inference_choice.after_training)
    return pathlib.Path(outcome.model_path)


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset, tmp_path_factory) -> pathlib.Path:
    """A tiny U-Net trained for a few steps on the tiny dataset (its model.keras; shared: never modify it).

    Its quality does not matter: prediction and evaluation tests check shapes,
    geometry, labels and reports, not Dice.
    """
    from configs.train import tiny_cpu
    from evaluation import inference_choice
    from trainer import training

    cfg = tiny_cpu.get_config()
    cfg.data_dir = tiny_dataset.dataset_dir
    cfg.patch_size = (16, 16, 16)
    cfg.epochs, cfg.steps_per_epoch = 1, 2
    # a softmax over the classes (tiny_cpu trains regions): the serving and evaluation tests read class
    # probabilities; region models have their own (tests/trainer/test_regions.py, the bbox_model fixture)
    cfg.target, cfg.deep_supervision = "classes", False
    # the general default (tiny_cpu scores the patch window only, without TTA, and predicts with TTA all):
    # its choice is tested on this run
    cfg.inference_choice.windows, cfg.inference_choice.tta, cfg.inference_choice.prediction_tta = (
        "patch,volume", "none,all", "")
    workdir = tmp_path_factory.mktemp("run")
    outcome = training.train_and_evaluate(cfg, str(workdir), echo=lambda *_: None,
                                          after_training=inference_choice.after_training)
    return pathlib.Path(outcome.model_path)


@pytest.fixture(scope="session")
def stub_model(tiny_dataset, tmp_path_factory) -> pathlib.Path:
    """A run folder holding the stub as model.keras, trained 'on' the tiny dataset (its lineage); never modify it.

    Written through the run contract (tests/serving/test_trained_run.py
    checks that a run folder written by hand, as earlier trainers did, loads too).
    """
    return pathlib.Path(write_stub_run(tmp_path_factory.mktemp("stub_run"), tiny_dataset.dataset_dir))
