"""Segment a patient from its raw NIfTI files and write the result in its own space.

The preprocessing is the data engine's own (:func:`preprocessing.patient.preprocess`,
here on all of this machine's cores) run with the configuration stored in the manifest of the dataset the model was
trained on (named by the run's ``lineage.json``), so a prediction sees exactly
what training saw.  After sliding-window inference the classes are mapped back
to the source's label numbering (enhancing 3 -> 4 for BraTS 2020/2021), put
back into the uncropped grid, and saved with the source's affine and header.

Scans are first compared with the geometry the model's dataset recorded
(:mod:`shared.geometry`): another orientation is reoriented on the way in and
the segmentation turned back on the way out; another spacing or grid is
resampled where the dataset's preprocessing resamples, and refused otherwise.
Everything done to the grid comes back from the core as one record
(:class:`preprocessing.grid.GridRecord`) whose ``invert`` is the only way out,
and each source file is read once: the core keeps the header and, for the
pictures, the voxels as stored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import time
from typing import Callable

import numpy as np

from preprocessing import grid as grid_lib
from preprocessing.discovery import PatientSource
from preprocessing.patient import PatientError, preprocess
from shared import challenges, geometry, labels, layouts, manifest, metrics, storage
from shared.spec import PreprocessingSpec
from shared.nifti_io import load_array, nifti_bytes, parse_nifti
from shared.storage import read_bytes, write_bytes
from serving import inference

LINEAGE = "lineage.json"
CONFIG = "config.json"


class ModelError(Exception):
    """A model that cannot be used for prediction; the message says why."""


#: What one patient's own files can raise on their way through prediction and
#: scoring, so that patient is reported and the cohort goes on: the core's
#: PatientError (stage and file named), ValueError (an unreadable NIfTI, a
#: geometry or label numbering the model cannot take; GeometryError is one) and
#: OSError (a file that cannot be read or written).  Anything else (TypeError,
#: KeyError, preprocessing's StageBug, ...) is a bug in this code and stops the
#: run instead of turning every patient into a "failure".
PATIENT_INPUT_ERRORS = (PatientError, ValueError, OSError)


@dataclasses.dataclass
class Predictor:
    """A trained model (or an ensemble of models) with everything needed to repeat its data's preprocessing."""

    model: object  # the first (or only) model
    model_path: str  # the model file, or for an ensemble what was asked for (a cross-validation workdir, ...)
    preprocess_cfg: dict
    window: tuple[int, int, int]  # sliding-window size
    version_id: str
    data_dir: str | None  # the dataset version read for the config (None: lineage.json's copy)
    models: tuple = ()  # every member of an ensemble (empty: ``model`` alone)
    model_paths: tuple[str, ...] = ()  # their files
    postprocessing: tuple[dict, ...] = ()  # shared.postprocessing rules applied to the classes
    postprocessing_path: str | None = None  # where they were read from
    geometry: dict | None = None  # the training scans' geometry, as the dataset's manifest records it

    @property
    def expected(self) -> geometry.Expected:
        """What a scan must look like for this model (orientation, grid, resampling)."""
        return geometry.Expected.from_entry(self.geometry, self.preprocess_cfg)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.preprocess_cfg["modalities"])

    @property
    def layout(self) -> str:
        return self.preprocess_cfg["layout"]

    @property
    def challenge(self) -> challenges.Challenge:
        """What the model's classes mean (the challenge of its training data)."""
        return challenges.get(self.layout)

    @property
    def members(self) -> tuple:
        return tuple(self.models) or (self.model,)

    def predict_fn(self):
        """Softmax of the model, or the mean softmax of an ensemble's members."""
        return inference.mean_predict_fn([inference.keras_predict_fn(m) for m in self.members])

    def provenance(self) -> dict:
        """What the JSON beside a segmentation says about the model(s) and their post-processing."""
        about = {"model": self.model_path, "dataset_version_id": self.version_id}
        if len(self.model_paths) > 1:
            about["ensemble"] = list(self.model_paths)
        if self.postprocessing:
            about["postprocessing"] = list(self.postprocessing)
            about["postprocessing_file"] = self.postprocessing_path
        return about

    @property
    def decoding(self):
        """How to turn the model's probabilities into classes: None (argmax) or a region decoding."""
        return region_decoding(self.model, self.challenge)


def region_decoding(model, challenge: challenges.Challenge):
    """The :mod:`shared.regions` decoding of a region model (``target=regions``), None for a class model.

    The model says which it is by its output layer's name; its output count
    must match the challenge's regions, or the channels would be misread.
    """
    from shared import regions
    from trainer import targets

    if model is None or targets.model_target(model) != "regions":
        return None
    found = regions.decoding(challenge)
    if model.output_shape[-1] != len(found.names):
        raise ModelError(f"the region model has {model.output_shape[-1]} outputs, but {challenge.name} has "
                         f"{len(found.names)} regions ({', '.join(found.names)})")
    return found


@dataclasses.dataclass
class Prediction:
    patient_id: str
    classes: np.ndarray  # the model's classes in the source grid (uint8)
    label_convention: str  # numbering the written segmentation uses
    challenge: challenges.Challenge  # what the classes mean (the model's)
    affine: np.ndarray
    header: object  # nibabel header of the source's first modality
    spacing: tuple[float, float, float]
    display: np.ndarray | None  # first modality as stored (for pictures)
    seconds: dict[str, float]
    source_files: dict[str, str]
    probabilities: np.ndarray | None = None  # (X, Y, Z, K) float16 in the source grid, when asked for
    notes: tuple[str, ...] = ()  # what was done to the scan's geometry on the way (reoriented, resampled)
    scans: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # modalities as stored, when kept

    @property
    def stored_labels(self) -> np.ndarray:
        return labels.to_source(self.classes, self.label_convention)

    def volumes_ml(self) -> dict[str, float]:
        return metrics.volumes_ml(self.classes, self.challenge, self.spacing)


def _read_json(path: str) -> dict:
    return json.loads(storage.read_bytes(path))


def find_run_dir(model_path: str) -> str | None:
    """The training workdir of a model file: its folder or that folder's parent."""
    folder = os.path.dirname(os.path.abspath(model_path)) if "://" not in model_path else posixpath.dirname(model_path)
    for candidate in (folder, os.path.dirname(folder)):
        if storage.exists(storage.join(candidate, LINEAGE)):
            return candidate
    return None


def preprocessing_config(run_dir: str | None, data_dir: str | None) -> tuple[dict, str, str | None, dict | None]:
    """The preprocessing config, version id, directory and scan geometry of the model's training data.

    Taken from the dataset's manifest (``data_dir``, or the one lineage.json
    names); when that dataset is not reachable from here, from the copies the
    trainer keeps in lineage.json.  The geometry is None for a dataset
    preprocessed before it was recorded.
    """
    lineage = _read_json(os.path.join(run_dir, LINEAGE)) if run_dir else {}
    data_dir = data_dir or lineage.get("data_dir")
    if data_dir and storage.exists(manifest.manifest_path(data_dir)):
        found = manifest.read_manifest(data_dir)
        if lineage and found["version_id"] != lineage.get("version_id"):
            raise ModelError(f"{data_dir} holds dataset version {found['version_id']}, but the model was "
                             f"trained on {lineage['version_id']}")
        return found["config"], found["version_id"], data_dir, found.get(geometry.KEY)
    if "preprocess" in lineage:
        return lineage["preprocess"], lineage["version_id"], None, lineage.get(geometry.KEY)
    where = f"{run_dir}/{LINEAGE}" if run_dir else "no lineage.json beside the model"
    raise ModelError(f"cannot find the model's preprocessing: {where}; dataset {data_dir or '(none named)'} "
                     "not found. Pass --data_dir=<the dataset version directory it was trained on>")


def window_size(window, run_dir: str | None, cfg: dict) -> tuple[int, int, int]:
    """The sliding window: ``None`` the training patch, ``"volume"`` the whole crop, or X,Y,Z.

    The training patch is nnU-Net's choice (the network sees what it was
    trained on); ``volume`` repeats the trainer's own validation, which runs
    on whole cropped volumes and, for a small patch, sees more context.
    """
    if window in (None, "", "patch"):
        train_cfg = _read_json(storage.join(run_dir, CONFIG)) if run_dir else {}
        window = train_cfg.get("patch_size") or PreprocessingSpec.from_config(cfg).crop_shape
    elif window == "volume":
        window = PreprocessingSpec.from_config(cfg).crop_shape
    elif isinstance(window, str):
        window = window.split(",")
    try:
        size = tuple(int(w) for w in window)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise ModelError(f"window {window!r} is not 'patch', 'volume' or three positive sizes X,Y,Z")
    return size


# What training found best on its validation split (evaluation/inference_choice.py), beside lineage.json.
INFERENCE_CHOICE = "inference.json"
DEFAULT_WINDOW, DEFAULT_TTA = "patch", "none"


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """The sliding window and TTA a prediction runs with, and why (shown to the user)."""

    window: str  # "patch", "volume" or "X,Y,Z"
    tta: str
    source: str  # "asked", "recorded <path>" or "default"


def recorded_inference(model_path) -> dict | None:
    """The run's recorded best window and TTA (``inference.json``), for a single model; None otherwise.

    An ensemble has no one run to take it from; its members may disagree.
    """
    try:
        paths = expand_models(model_path)
    except ModelError:
        return None
    run_dir = find_run_dir(paths[0]) if len(paths) == 1 else None
    path = storage.join(run_dir, INFERENCE_CHOICE) if run_dir else None
    if not path or not storage.exists(path):
        return None
    return dict(_read_json(path), path=path)


def inference_settings(model_path, window: str | None = None, tta: str | None = None) -> InferenceSettings:
    """What ``predict``, ``evaluate --model`` and the app run with: what was asked, else the run's
    recorded best (per setting), else the training patch without TTA.

    Which window is better depends on the model (a small patch sees little
    context, so the whole crop can score higher), so the run measures it on
    its validation split rather than the code guessing.
    """
    recorded = recorded_inference(model_path) if window in (None, "") or tta in (None, "") else None
    source = "asked"
    if recorded is not None:
        source = f"recorded in {recorded['path']}"
    elif window in (None, "") or tta in (None, ""):
        source = "default"
    chosen = recorded or {}
    return InferenceSettings(window=window or chosen.get("window") or DEFAULT_WINDOW,
                             tta=tta or chosen.get("tta") or DEFAULT_TTA, source=source)


SERVING_PRECISIONS = ("auto", "as_trained", "float32")


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def float32_copy(model):
    """The same network and weights with every layer computing in float32.

    A model trained under ``mixed_float16`` (``precision=auto`` on a GPU) keeps
    that policy per layer in its ``.keras`` file, and TensorFlow has no
    float16 CPU kernel for MaxPool3D (nor bfloat16), so on a CPU it cannot
    predict at all.  Mixed-precision variables are float32 already, so the
    weights carry over unchanged.
    """
    import keras

    def as_float32(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=as_float32)
    copy.set_weights(model.get_weights())
    return copy


def _computes_below_float32(model) -> bool:
    return any(layer.dtype_policy.compute_dtype != "float32" for layer in model.layers)


def load_model(model_path: str, precision: str = "auto"):
    """A ``.keras`` model ready to predict on this machine, whatever precision it was trained under.

    ``auto``: as trained on a GPU, float32 on a CPU (where half-precision
    kernels are missing or slow); ``as_trained`` keeps the saved policies;
    ``float32`` always computes in float32.
    """
    import keras

    from trainer import losses, metrics as train_metrics  # noqa: F401  (register custom objects)

    if precision not in SERVING_PRECISIONS:
        raise ModelError(f"unknown serving precision {precision!r}; choose one of {list(SERVING_PRECISIONS)}")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as exc:
        raise ModelError(f"cannot load model {model_path}: {type(exc).__name__}: {exc}") from exc
    want_float32 = precision == "float32" or (precision == "auto" and not _has_gpu())
    if want_float32 and _computes_below_float32(model):
        model = float32_copy(model)
    return model


MODEL_FILE = "model.keras"
FOLD_PREFIX = "fold_"


def fold_models(workdir: str) -> list[str]:
    """The ``fold_<k>/model.keras`` files of a cross-validation workdir, by fold (empty: not one)."""
    found = []
    for entry in storage.match(storage.join(workdir.rstrip("/"), FOLD_PREFIX + "*", MODEL_FILE)):
        name = posixpath.basename(posixpath.dirname(entry.path))
        if name[len(FOLD_PREFIX):].isdigit():
            found.append((int(name[len(FOLD_PREFIX):]), entry.path))
    return [path for _, path in sorted(found)]


def expand_models(specs) -> list[str]:
    """Model files from ``--model`` values: ``.keras`` files, run folders, or cross-validation workdirs (all folds)."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    if not specs:
        raise ModelError("no model given")
    paths = []
    for spec in specs:
        if storage.is_dir(spec):
            if storage.exists(storage.join(spec, MODEL_FILE)):
                paths.append(storage.join(spec, MODEL_FILE))
                continue
            folds = fold_models(spec)
            if not folds:
                raise ModelError(f"{spec} holds neither {MODEL_FILE} nor {FOLD_PREFIX}<k>/{MODEL_FILE} "
                                 "(a cross-validation workdir)")
            paths += folds
        elif storage.exists(spec):
            paths.append(spec)
        else:
            raise ModelError(f"model file {spec} does not exist")
    if len(set(paths)) != len(paths):
        raise ModelError(f"the same model is named twice: {paths}")
    return paths


def check_same_preprocessing(members: list[tuple[str, dict, str]]) -> None:
    """Refuse to ensemble models whose inputs would be prepared differently.

    ``members``: (model path, preprocessing config, dataset version).  The
    ensemble preprocesses each patient once, so every member must have been
    trained on the same challenge, preprocessing and dataset version.
    """
    first_path, first_cfg, first_version = members[0]
    for path, cfg, version in members[1:]:
        if cfg.get("layout") != first_cfg.get("layout"):
            raise ModelError(f"cannot ensemble {first_path} ({first_cfg.get('layout')}) with {path} "
                             f"({cfg.get('layout')}): they were trained for different challenges")
        differing = sorted(k for k in set(cfg) | set(first_cfg) if cfg.get(k) != first_cfg.get(k))
        if differing:
            raise ModelError(f"cannot ensemble {first_path} with {path}: their preprocessing differs in "
                             f"{', '.join(differing)}")
        if version != first_version:
            raise ModelError(f"cannot ensemble {first_path} (dataset version {first_version}) with {path} "
                             f"(dataset version {version}): train every member on the same dataset version")


POSTPROCESSING_FILE = "postprocessing.json"


def find_postprocessing(specs, paths: list[str]) -> str | None:
    """The ``postprocessing.json`` that goes with the models, if any.

    Looked for in a folder named as the model (a cross-validation workdir),
    else in the run folder of a single model, else in the folder all the
    members' run folders share (the folds of one cross-validation workdir).
    """
    specs = [specs] if isinstance(specs, str) else list(specs)
    candidates = [s for s in specs if storage.is_dir(s)]
    runs = [find_run_dir(p) for p in paths]
    if len(paths) == 1 and runs[0]:
        candidates.append(runs[0])
    parents = {posixpath.dirname(r.rstrip("/")) if "://" in r else os.path.dirname(os.path.abspath(r))
               for r in runs if r}
    if len(parents) == 1 and len(paths) > 1 and None not in runs:
        candidates.append(parents.pop())
    for folder in candidates:
        path = storage.join(folder, POSTPROCESSING_FILE)
        if storage.exists(path):
            return path
    return None


def load_predictor(model_path, data_dir: str | None = None, window=None, with_model: bool = True,
                   postprocessing: str | None = "auto") -> Predictor:
    """Load a ``.keras`` model, or an ensemble, and the preprocessing of the data it learnt from.

    ``model_path``: a ``.keras`` file, a run folder, a cross-validation workdir
    (all its folds) or a list of these; several models make an ensemble that
    averages their softmax.  ``postprocessing``: ``"auto"`` applies the
    ``postprocessing.json`` found with the models (:func:`find_postprocessing`),
    ``None``/``"none"`` none, anything else is the path of one.
    ``with_model=False`` reads only the preprocessing (``model`` is None): for
    steps that preprocess but never run the network, such as the Beam job's
    Preprocess step, whose workers would otherwise load the model for nothing.
    """
    from shared import postprocessing as post

    paths = expand_models(model_path)
    members = []
    for path in paths:
        run_dir = find_run_dir(path)
        cfg, version, found_dir, scans = preprocessing_config(run_dir, data_dir)
        members.append((path, run_dir, cfg, version, found_dir, scans))
    check_same_preprocessing([(path, cfg, version) for path, _, cfg, version, _, _ in members])
    _, run_dir, cfg, version, found_dir, scans = members[0]
    shown = model_path if isinstance(model_path, str) else (paths[0] if len(paths) == 1 else ",".join(model_path))
    rules_path = None
    if postprocessing == "auto":
        rules_path = find_postprocessing(model_path, paths)
    elif postprocessing not in (None, "", "none"):
        if not storage.exists(postprocessing):
            raise ModelError(f"post-processing file {postprocessing} does not exist")
        rules_path = postprocessing
    try:
        rules = tuple(post.load(rules_path, challenges.get(cfg["layout"]))) if rules_path else ()
    except (ValueError, KeyError) as exc:
        raise ModelError(f"cannot use post-processing {rules_path}: {exc}") from None
    predictor = Predictor(None, shown, cfg, window_size(window, run_dir, cfg), version, found_dir,
                          model_paths=tuple(paths), postprocessing=rules, postprocessing_path=rules_path,
                          geometry=scans)
    if not with_model:
        return predictor
    models = []
    for path in paths:
        model = load_model(path)
        expected = model.input_shape[-1]
        if expected != len(cfg["modalities"]):
            raise ModelError(f"model {path} takes {expected} input channels, but its preprocessing "
                             f"gives {len(cfg['modalities'])} ({', '.join(cfg['modalities'])})")
        models.append(model)
    check_same_target(paths, models)
    return dataclasses.replace(predictor, model=models[0], models=tuple(models) if len(models) > 1 else ())


def with_window(predictor: Predictor, window) -> Predictor:
    """The same loaded model(s) with another sliding window (``patch``, ``volume`` or X,Y,Z): no reload.

    The training patch is the first member's run's.
    """
    run_dir = find_run_dir(predictor.model_paths[0]) if predictor.model_paths else None
    return dataclasses.replace(predictor, window=window_size(window, run_dir, predictor.preprocess_cfg))


def check_same_target(paths: list[str], models: list) -> None:
    """Refuse an ensemble mixing class models (softmax) and region models (sigmoids): their outputs do not average."""
    from trainer import targets

    kinds = [targets.model_target(m) for m in models]
    if len(set(kinds)) > 1:
        listed = ", ".join(f"{p} ({k})" for p, k in zip(paths, kinds))
        raise ModelError(f"cannot ensemble models trained on different targets: {listed}")


def source_from_folder(folder: str, predictor: Predictor) -> tuple[PatientSource, str]:
    """The patient's modality files (any BraTS release naming) and the numbering to write its segmentation in."""
    patient_id = posixpath.basename(folder.rstrip("/"))
    if not storage.is_dir(folder):
        raise PatientError("discover", "not a folder", folder)
    paths = storage.list_dir(folder)
    layout, match = layouts.match_any_layout(patient_id, paths, predictor.channels, predictor.layout)
    if layout is None:
        channel, reason = sorted(match.missing.items())[0]
        raise PatientError("discover", f"missing modality {channel}: {reason}", folder)
    return (PatientSource(patient_id, "unknown", match.paths, {}),
            challenges.output_convention(predictor.challenge, layout.label_convention))


def source_image(path: str) -> tuple[object, np.ndarray]:
    """Header and voxels of a file read on its own (not during a prediction, whose
    core keeps both: :attr:`Prepared.scans`, ``Prediction.scans``)."""
    image = parse_nifti(read_bytes(path), posixpath.basename(path))
    return image.header, load_array(image, posixpath.basename(path))


@dataclasses.dataclass
class Prepared:
    """A patient preprocessed for the network (what travels from Preprocess to Segment on Beam)."""

    source: PatientSource
    label_convention: str
    challenge: challenges.Challenge
    record: object  # shared.schema.PatientRecord: cropped, normalised image and the crop geometry
    grid: grid_lib.GridRecord  # what was done to the scan's grid (and its header): finish() inverts it
    notes: tuple[str, ...] = ()  # what was done to the scan's geometry (for the report and the app)
    scans: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # modalities as stored (pictures)

    @property
    def header(self):
        """The first modality's header as stored, copied into the written segmentation."""
        return self.grid.header


def prepare(predictor: Predictor, source: PatientSource, label_convention: str, threads: int | None = None,
            display: bool = True, all_scans: bool = False) -> Prepared:
    """The data engine's preprocessing with the model's dataset config; PatientError names stage and file.

    ``threads``: how many N4 fits may run side by side in worker processes.
    The default is 1: with N4 on the coarse grid a warm pool gains only 1.1x
    (bench-predict), and a cold one costs more than that for a single patient.
    ``display`` keeps the first modality as stored for the pictures,
    ``all_scans`` every modality (the app shows them all): the core read them
    once, and nothing reads them again.
    """
    threads = threads or 1
    keep = predictor.channels if all_scans else predictor.channels[:1] if display else ()
    done = preprocess(source, dict(predictor.preprocess_cfg, require_seg=False), threads=threads,
                      expected=predictor.expected, keep=keep)
    if not challenges.same_classes(label_convention, predictor.challenge.label_convention):
        raise ValueError(f"a {predictor.challenge.name} model cannot write labels in numbering {label_convention!r}")
    notes = done.notes if predictor.expected.recorded else (
        "the model's dataset records no scan geometry (preprocessed before it was recorded): orientation, "
        "spacing and grid were not checked", *done.notes)
    return Prepared(source, label_convention, predictor.challenge, done.record, done.grid, notes, done.scans)


def infer_probabilities(predictor: Predictor, prepared: Prepared, tta: str = "none", overlap: float = 0.5,
                        progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Probabilities ``(X, Y, Z, K)`` on the cropped grid, by sliding window (an ensemble's: the members' mean).

    Softmax over classes, or one sigmoid per region for a region model (``target=regions``).
    """
    image = prepared.record.image.astype(np.float32)
    expected = predictor.model.input_shape[-1]
    if image.shape[-1] != expected:
        raise PatientError("inference", f"{image.shape[-1]} channels, model takes {expected}",
                           prepared.source.files[predictor.channels[0]])
    return inference.sliding_window(predictor.predict_fn(), image, predictor.window, overlap=overlap, tta=tta,
                                    progress=progress)


def classes_of(predictor: Predictor, probs: np.ndarray) -> np.ndarray:
    """Classes (uint8) from probabilities (argmax, or a region model's decoding), then the post-processing rules."""
    from shared import postprocessing as post

    classes = inference.to_classes(probs, predictor.decoding)
    return post.apply(classes, predictor.challenge, predictor.postprocessing) if predictor.postprocessing else classes


def infer(predictor: Predictor, prepared: Prepared, tta: str = "none", overlap: float = 0.5,
          progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Classes (uint8) on the cropped grid, by sliding window, post-processed as the predictor says."""
    return classes_of(predictor, infer_probabilities(predictor, prepared, tta, overlap, progress))


def finish(prepared: Prepared, cropped: np.ndarray, display: bool = True, seconds=None,
           probabilities: np.ndarray | None = None, softmax: bool | None = None) -> Prediction:
    """The classes (and probabilities) back on the scan's own grid, by the core's record of its grid
    (:meth:`preprocessing.grid.GridRecord.invert`), with the first modality as stored for the pictures
    when ``display`` (kept by :func:`prepare`, not read again).

    ``probabilities``: the cropped-grid probabilities, to be kept (source grid,
    float16) for ``<id>.npz``; ``softmax`` then says what they are (a class
    model's softmax, or a region model's sigmoids, ``Predictor.decoding`` not
    None), which decides what "outside the crop" is.  It has no default: a
    guess would mark every region certain outside the crop for region models.
    """
    if probabilities is not None and softmax is None:
        raise TypeError("finish(): probabilities need softmax=True (class model) or False (region model)")
    record, source, grid = prepared.record, prepared.source, prepared.grid
    first = record.channels[0]
    if display and first not in prepared.scans:
        raise TypeError("finish(display=True): prepare() was told not to keep the scan (display=False)")
    classes = grid.invert(cropped, grid_lib.LABELS)
    probs = None if probabilities is None else grid.invert(
        probabilities, grid_lib.SOFTMAX if softmax else grid_lib.SIGMOID).astype(np.float16)
    return Prediction(
        patient_id=source.patient_id, label_convention=prepared.label_convention, challenge=prepared.challenge,
        classes=classes, affine=grid.affine, header=grid.header, spacing=grid.spacing,
        display=prepared.scans[first] if display else None, seconds=dict(seconds or {}),
        source_files=dict(source.files), probabilities=probs, notes=tuple(prepared.notes),
        scans=dict(prepared.scans),
    )


def predict_patient(
    predictor: Predictor,
    source: PatientSource,
    label_convention: str,
    tta: str = "none",
    overlap: float = 0.5,
    progress: Callable[[str, float], None] | None = None,
    probabilities: bool = False,
    all_scans: bool = False,
) -> Prediction:
    """Preprocess, infer and uncrop one patient; PatientError names stage and file.

    ``probabilities``: keep the softmax (before post-processing) for ``<id>.npz``.
    ``all_scans``: keep every modality as stored in ``Prediction.scans`` (the
    first is always kept, as ``display``); each file is read once either way.
    """
    report = progress or (lambda stage, fraction: None)
    start = time.perf_counter()
    report("preprocess", 0.0)
    prepared = prepare(predictor, source, label_convention, all_scans=all_scans)
    middle = time.perf_counter()
    report("inference", 0.0)
    probs = infer_probabilities(predictor, prepared, tta, overlap, lambda done, total: report("inference", done / total))
    cropped = classes_of(predictor, probs)
    end = time.perf_counter()
    prediction = finish(prepared, cropped, seconds={"preprocess": middle - start, "inference": end - middle},
                        probabilities=probs if probabilities else None, softmax=predictor.decoding is None)
    report("done", 1.0)
    return prediction


def segmentation_bytes(prediction: Prediction) -> bytes:
    """The segmentation as ``.nii.gz`` bytes: source affine and header, uint8 labels."""
    header = prediction.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    return nifti_bytes(prediction.stored_labels.astype(np.uint8), prediction.affine, header=header)


def volumes_report(prediction: Prediction, predictor: Predictor | None = None) -> dict:
    """The JSON written beside a segmentation: volumes and where it came from."""
    report = {
        "patient_id": prediction.patient_id,
        "volumes_ml": {k: round(v, 3) for k, v in prediction.volumes_ml().items()},
        "voxel_spacing_mm": list(prediction.spacing),
        "challenge": prediction.challenge.name,
        "label_convention": prediction.label_convention,
        "labels": dict(zip(labels.class_keys(prediction.label_convention),
                           labels.stored_values(prediction.label_convention))),
        "seconds": {k: round(v, 3) for k, v in prediction.seconds.items()},
        "source_files": {k: posixpath.basename(v) for k, v in prediction.source_files.items()},
        "geometry_notes": list(prediction.notes),
    }
    if predictor is not None:
        report.update(predictor.provenance())
    return report


def probabilities_bytes(prediction: Prediction) -> bytes:
    """``<id>.npz``: the softmax (source grid, float16, ``(X, Y, Z, K)``) and what its classes are."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, probabilities=prediction.probabilities.astype(np.float16),
                        class_keys=np.array(prediction.challenge.class_keys), affine=prediction.affine)
    return buffer.getvalue()


def write_outputs(prediction: Prediction, output_dir: str, predictor: Predictor | None = None,
                  pictures: bool = True) -> dict[str, str]:
    """Write ``<id>.nii.gz`` (BraTS submission naming), ``<id>.json``, the pictures and ``<id>.npz`` (probabilities, when kept)."""
    pid = prediction.patient_id
    paths = {"segmentation": posixpath.join(output_dir, f"{pid}.nii.gz"),
             "volumes": posixpath.join(output_dir, f"{pid}.json")}
    write_bytes(paths["segmentation"], segmentation_bytes(prediction))
    write_bytes(paths["volumes"], (json.dumps(volumes_report(prediction, predictor), indent=2) + "\n").encode())
    if prediction.probabilities is not None:
        paths["probabilities"] = posixpath.join(output_dir, f"{pid}.npz")
        write_bytes(paths["probabilities"], probabilities_bytes(prediction))
    if pictures:
        from serving import pictures as pics  # matplotlib is only needed here

        paths["png"] = posixpath.join(output_dir, f"{pid}.png")
        paths["gif"] = posixpath.join(output_dir, f"{pid}.gif")
        write_bytes(paths["png"], pics.summary_png(prediction.display, prediction.classes, prediction.challenge,
                                                   prediction.spacing,
                                                   title=pid, affine=prediction.affine))
        write_bytes(paths["gif"], pics.flythrough_gif(prediction.display, prediction.classes, prediction.challenge,
                                                      spacing=prediction.spacing, affine=prediction.affine))
    return paths


def resolve_inputs(patterns: list[str]) -> list[str]:
    """Patient folders from folder paths and globs, sorted and without repeats."""
    folders: set[str] = set()
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            hits = [p for p in _glob_folders(pattern)]
            if not hits:
                raise FileNotFoundError(f"--input {pattern} matches no folder")
            folders.update(h.rstrip("/") for h in hits)
        else:
            if not storage.is_dir(pattern):
                raise FileNotFoundError(f"--input {pattern} is not a folder")
            folders.add(pattern.rstrip("/"))
    return sorted(folders)


def _glob_folders(pattern: str) -> list[str]:
    """Folders matching a glob (local), or prefixes holding files (object stores)."""
    if storage.is_remote(pattern):
        return sorted({posixpath.dirname(e.path) for e in storage.match(storage.join(pattern, "*"))})
    import glob

    return [p for p in sorted(glob.glob(pattern)) if os.path.isdir(p)]
