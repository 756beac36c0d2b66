"""The run contract: what a training run folder holds, and the typed record prediction repeats.

A run folder is written by training (``trainer.training``) and read by
prediction, evaluation, cross-validation scoring, batch prediction and the
app.  Every file and folder name in it is spelled here and nowhere else, and
its JSON files are written and read only here, so a reader gets typed fields
(:class:`Lineage`, :class:`TrainedRun`, :class:`RecordedInference`) instead
of indexing dicts whose keys drift between modules, as nnU-Net's plans and
``file_path_utilities`` do for its result folders.

The files stay those earlier runs already have (``lineage.json``,
``config.json``, ``inference.json``, ``postprocessing.json``), so every run
trained before this module existed keeps loading: a missing key reads as
"not recorded" (None), never as an error.  No TensorFlow or Keras here: the
app and the Beam workers read runs without them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath

from shared import geometry, manifest, postprocessing, storage

# The files and folders of a run folder (training writes them; prediction and evaluation read them).
MODEL_FILE = "model.keras"  # the final model
LINEAGE_FILE = "lineage.json"  # which data it learnt from (Lineage)
CONFIG_FILE = "config.json"  # the training config as run
INFERENCE_FILE = "inference.json"  # the best window and TTA on the validation split (evaluation.inference_choice)
POSTPROCESSING_FILE = "postprocessing.json"  # rules chosen on cross-validation or a run's validation split (shared.postprocessing)
HISTORY_FILE = "history.csv"  # one row per epoch (Keras CSVLogger)
BACKUP_DIR = "backup"  # the resumable state (trainer.resume)
CHECKPOINTS_DIR = "checkpoints"  # the best model on validation so far
BEST_CHECKPOINT = "best.keras"
TENSORBOARD_DIR = "tensorboard"
SAVED_MODEL_DIR = "saved_model"  # the final model as a TensorFlow SavedModel
WORKER_PREFIX = "worker_"  # worker_<i>/: a non-chief worker's scratch folder
# A cross-validation workdir: one run folder per fold, the pooled report and the chosen post-processing.
FOLD_PREFIX = "fold_"
VALIDATION_DIR = "validation"  # fold_<k>/validation/: the fold's report and predictions
CROSS_VALIDATION_DIR = "cross_validation"  # <workdir>/cross_validation/: the pooled report


class RunError(Exception):
    """A run folder (or its dataset) that cannot give what prediction must repeat; the message says why."""


def join(run_dir: str, *names: str) -> str:
    return storage.join(run_dir, *names)


def model_file(run_dir: str) -> str:
    return join(run_dir, MODEL_FILE)


def fold_dir(workdir: str, fold: int) -> str:
    return join(workdir, f"{FOLD_PREFIX}{fold}")


def worker_dir(workdir: str, index: int) -> str:
    return join(workdir, f"{WORKER_PREFIX}{index}")


def fold_models(workdir: str) -> list[str]:
    """The ``fold_<k>/model.keras`` files of a cross-validation workdir, by fold (empty: not one)."""
    found = []
    for entry in storage.match(join(workdir.rstrip("/"), FOLD_PREFIX + "*", MODEL_FILE)):
        name = posixpath.basename(posixpath.dirname(entry.path))
        if name[len(FOLD_PREFIX):].isdigit():
            found.append((int(name[len(FOLD_PREFIX):]), entry.path))
    return [path for _, path in sorted(found)]


def parent_dir(path: str) -> str:
    """The folder holding ``path`` (absolute for a local path)."""
    return posixpath.dirname(path.rstrip("/")) if "://" in path else os.path.dirname(os.path.abspath(path))


def find_run_dir(model_path: str) -> str | None:
    """The run folder of a model file: its folder or that folder's parent, whichever holds a lineage."""
    folder = parent_dir(model_path)
    for candidate in (folder, parent_dir(folder)):
        if storage.exists(join(candidate, LINEAGE_FILE)):
            return candidate
    return None


def _read_json(path: str) -> dict:
    return json.loads(storage.read_bytes(path))


def _write_json(path: str, value) -> None:
    storage.write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode())


def _tuple(value) -> tuple | None:
    return None if value is None else tuple(value)


@dataclasses.dataclass(frozen=True)
class Lineage:
    """``lineage.json``: the data a run learnt from, and copies of what prediction must repeat.

    The preprocessing config and the training scans' geometry are copies of
    the dataset manifest's, for where the dataset is not reachable.  Older
    runs (and hand-made test runs) record fewer fields; those read as None.
    """

    version_id: str
    data_dir: str | None = None
    manifest_sha256: str | None = None
    channels: tuple[str, ...] | None = None
    num_train: int | None = None
    num_val: int | None = None
    challenge: str | None = None  # the label numbering predictions are written in, and the app's legend
    label_convention: str | None = None
    num_classes: int | None = None
    target: str = "classes"  # regions: sigmoid outputs, decoded by shared/regions.py
    preprocess: dict | None = None
    geometry: dict | None = None
    fold: int | None = None  # cross-validation: which fold validated (None: the manifest's val split)
    num_folds: int | None = None
    val_patients: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, stored: dict) -> "Lineage":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in stored.items() if k in known and v is not None}
        for name in ("channels", "val_patients"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)

    def to_json(self) -> dict:
        """The JSON training writes: every field, lists for tuples (as runs have always recorded it)."""
        stored = dataclasses.asdict(self)
        for name in ("channels", "val_patients"):
            stored[name] = None if stored[name] is None else list(stored[name])
        return stored


def read_lineage(run_dir: str) -> Lineage | None:
    path = join(run_dir, LINEAGE_FILE)
    return Lineage.from_json(_read_json(path)) if storage.exists(path) else None


def write_lineage(run_dir: str, lineage: Lineage) -> None:
    _write_json(join(run_dir, LINEAGE_FILE), lineage.to_json())


def write_config(run_dir: str, cfg: dict) -> None:
    """``config.json``: the training config as run (patch size, precision, ...)."""
    _write_json(join(run_dir, CONFIG_FILE), cfg)


def read_config(run_dir: str) -> dict:
    """The training config as run; empty for a run folder without one."""
    path = join(run_dir, CONFIG_FILE)
    return _read_json(path) if storage.exists(path) else {}


def recorded_precision(run_dir: str) -> str:
    """The precision policy the run trained under ("" when not recorded), for a re-launch's report."""
    return read_config(run_dir).get("precision", "")


@dataclasses.dataclass(frozen=True)
class RecordedInference:
    """``inference.json``: the window and TTA that scored best on the run's validation split."""

    window: str | None
    tta: str | None
    patients: int | None  # how many validation patients it was measured on
    candidates: tuple[dict, ...]  # every window x TTA tried, with its scores (evaluation.inference_choice)
    path: str  # where it was read from (shown to the user)
    record: dict  # everything recorded (metric, split, overlap, ...)


def write_inference(run_dir: str, choice: dict) -> str:
    """Save evaluation.inference_choice's record beside the lineage; returns its path."""
    path = join(run_dir, INFERENCE_FILE)
    _write_json(path, choice)
    return path


def write_postprocessing(folder: str, choice: postprocessing.Choice) -> str:
    """Save post-processing rules where prediction looks for them (:func:`find_postprocessing`): a run
    folder (chosen on its validation split) or a cross-validation workdir (chosen on its folds)."""
    path = join(folder, POSTPROCESSING_FILE)
    postprocessing.save(path, choice)
    return path


def read_inference(run_dir: str) -> RecordedInference | None:
    path = join(run_dir, INFERENCE_FILE)
    if not storage.exists(path):
        return None
    record = _read_json(path)
    return RecordedInference(record.get("window"), record.get("tta"), record.get("patients"),
                             tuple(record.get("candidates") or ()), path, record)


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The preprocessing a model's inputs must repeat, and where it was read."""

    config: dict  # the dataset's preprocessing config (manifest ``config``)
    version_id: str
    data_dir: str | None  # the dataset version read (None: the lineage's copies)
    geometry: dict | None  # the training scans' geometry (None: preprocessed before it was recorded)


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """One trained run, as prediction, evaluation and the app use it; read once with :meth:`read`."""

    run_dir: str
    lineage: Lineage
    patch_size: tuple[int, int, int] | None  # the training patch (config.json), the default sliding window
    precision: str  # the training precision policy (config.json), "" when not recorded
    inference: RecordedInference | None  # inference.json, when the run chose one

    @classmethod
    def read(cls, run_dir: str) -> "TrainedRun":
        lineage = read_lineage(run_dir)
        if lineage is None:
            raise RunError(f"{run_dir} holds no {LINEAGE_FILE}: not a training run")
        cfg = read_config(run_dir)
        return cls(run_dir, lineage, _tuple(cfg.get("patch_size")), cfg.get("precision", ""), read_inference(run_dir))

    @property
    def model_file(self) -> str:
        return model_file(self.run_dir)

    @property
    def history_file(self) -> str:
        return join(self.run_dir, HISTORY_FILE)

    @property
    def validation_dir(self) -> str:
        return join(self.run_dir, VALIDATION_DIR)

    @property
    def fold(self) -> int | None:
        return self.lineage.fold

    def validation(self) -> tuple[str, list[str] | None]:
        """The split and patients the run validated on: the manifest's val split, or its fold's patients."""
        if self.lineage.fold is not None:
            return "train", list(self.lineage.val_patients or [])
        return "val", None

    def training_data(self, data_dir: str | None = None) -> TrainingData:
        """The preprocessing of the run's dataset: see :func:`training_data`."""
        return training_data(self, data_dir)


def run_of_model(model_path: str) -> TrainedRun | None:
    """The run a model file was trained in; None for a model without a run folder around it."""
    run_dir = find_run_dir(model_path)
    return TrainedRun.read(run_dir) if run_dir else None


def training_data(run: TrainedRun | None, data_dir: str | None = None) -> TrainingData:
    """The preprocessing config, version id, directory and scan geometry of the model's training data.

    Taken from the dataset's manifest (``data_dir``, or the one the lineage
    names); when that dataset is not reachable from here, from the copies the
    lineage keeps.  RunError when neither is there, or the dataset found is
    another version than the run learnt from.
    """
    lineage = run.lineage if run else None
    data_dir = data_dir or (lineage.data_dir if lineage else None)
    if data_dir and storage.exists(manifest.manifest_path(data_dir)):
        found = manifest.read_manifest(data_dir)
        if lineage and found["version_id"] != lineage.version_id:
            raise RunError(f"{data_dir} holds dataset version {found['version_id']}, but the model was "
                           f"trained on {lineage.version_id}")
        return TrainingData(found["config"], found["version_id"], data_dir, found.get(geometry.KEY))
    if lineage and lineage.preprocess is not None:
        return TrainingData(lineage.preprocess, lineage.version_id, None, lineage.geometry)
    where = join(run.run_dir, LINEAGE_FILE) if run else f"no {LINEAGE_FILE} beside the model"
    raise RunError(f"cannot find the model's preprocessing: {where}; dataset {data_dir or '(none named)'} "
                   "not found. Pass --data_dir=<the dataset version directory it was trained on>")


def find_postprocessing(folders: list[str]) -> str | None:
    """The first ``postprocessing.json`` among ``folders`` (the places a model's rules may lie), if any."""
    for folder in folders:
        path = join(folder, POSTPROCESSING_FILE)
        if storage.exists(path):
            return path
    return None
