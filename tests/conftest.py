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


# ----------------------------------------------------------------------------- a stub model
#
# A trained model may leave a class empty, and "labels are a subset of
# {0, 1, 2, 4}" is then true of a pipeline that drops or mislabels it.  The
# stub answers every class, at voxels the test can compute from the
# preprocessed image: by the value of the first channel (flair), the same in
# every window, so sliding windows and flips do not change it.

STUB_SCALE = 40.0


def stub_classes(image):
    """The classes the stub model predicts for a preprocessed ``(X, Y, Z, C)`` image.

    |flair| < 0.05 (outside the brain is 0): background; flair < -0.5: class 1
    (necrotic core); > 0.5: class 3 (enhancing); otherwise class 2 (edema).
    """
    import numpy as np

    return np.argmax(_stub_logits(np.asarray(image, np.float32)[..., 0]), axis=-1).astype(np.uint8)


def _stub_logits(flair):
    import numpy as np

    pos, neg = np.maximum(flair, 0), np.maximum(-flair, 0)
    return np.stack([2 - STUB_SCALE * (pos + neg), STUB_SCALE * neg - 20, np.zeros_like(flair),
                     STUB_SCALE * pos - 20], axis=-1)


def build_stub_model(channels: int = 4):
    """A Keras model (built-in layers only, so it loads as any .keras file) computing :func:`stub_classes`."""
    import keras
    import numpy as np

    image = keras.Input((None, None, None, channels), name="image")
    split = keras.layers.Conv3D(2, 1, activation="relu", name="pos_neg")(image)
    logits = keras.layers.Conv3D(4, 1, name="logits")(split)
    probs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    model = keras.Model(image, probs, name="stub")
    first = np.zeros((1, 1, 1, channels, 2), np.float32)
    first[..., 0, :] = [1.0, -1.0]  # relu(flair), relu(-flair)
    second = np.array([[-STUB_SCALE, 0.0, 0.0, STUB_SCALE], [-STUB_SCALE, STUB_SCALE, 0.0, 0.0]], np.float32)
    model.get_layer("pos_neg").set_weights([first, np.zeros(2, np.float32)])
    model.get_layer("logits").set_weights([second.reshape(1, 1, 1, 2, 4), np.array([2.0, -20.0, 0.0, -20.0], np.float32)])
    return model


@pytest.fixture(scope="session")
def stub_model(tiny_dataset, tmp_path_factory) -> pathlib.Path:
    """A run folder holding the stub as model.keras, trained 'on' the tiny dataset (its lineage); never modify it."""
    import json

    run = tmp_path_factory.mktemp("stub_run")
    manifest = json.loads(pathlib.Path(tiny_dataset.dataset_dir, "manifest.json").read_text())
    (run / "lineage.json").write_text(json.dumps({"data_dir": str(tiny_dataset.dataset_dir),
                                                  "version_id": manifest["version_id"],
                                                  "preprocess": manifest["config"]}))
    (run / "config.json").write_text(json.dumps({"patch_size": [16, 16, 16]}))
    build_stub_model().save(run / "model.keras")
    return run / "model.keras"
