"""Segment a patient from its raw NIfTI files and write the result in its own space.

The preprocessing is the data engine's own (:func:`preprocessing.patient.preprocess`,
here on all of this machine's cores) run with the configuration stored in the manifest of the dataset the model was
trained on (named by the run's ``lineage.json``), so a prediction sees exactly
what training saw.  After sliding-window inference the classes are mapped back
to the source's label numbering (enhancing 3 -> 4 for BraTS 2020/2021), put
back into the uncropped grid, and saved with the source's affine and header.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import time
from typing import Callable

import numpy as np

from preprocessing.discovery import PatientSource
from preprocessing.patient import PatientError, preprocess
from shared import challenges, labels, layouts, manifest, metrics, storage, volume_ops
from shared.spec import PreprocessingSpec
from shared.nifti_io import load_array, nifti_bytes, parse_nifti
from shared.storage import read_bytes, write_bytes
from serving import inference

LINEAGE = "lineage.json"
CONFIG = "config.json"


class ModelError(Exception):
    """A model that cannot be used for prediction; the message says why."""


@dataclasses.dataclass
class Predictor:
    """A trained model with everything needed to repeat its data's preprocessing."""

    model: object
    model_path: str
    preprocess_cfg: dict
    window: tuple[int, int, int]  # sliding-window size
    version_id: str
    data_dir: str | None  # the dataset version read for the config (None: lineage.json's copy)

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

    def predict_fn(self):
        return inference.keras_predict_fn(self.model)

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


def preprocessing_config(run_dir: str | None, data_dir: str | None) -> tuple[dict, str, str | None]:
    """The preprocessing config, version id and directory of the model's training data.

    Taken from the dataset's manifest (``data_dir``, or the one lineage.json
    names); when that dataset is not reachable from here, from the copy the
    trainer keeps in lineage.json.
    """
    lineage = _read_json(os.path.join(run_dir, LINEAGE)) if run_dir else {}
    data_dir = data_dir or lineage.get("data_dir")
    if data_dir and storage.exists(manifest.manifest_path(data_dir)):
        found = manifest.read_manifest(data_dir)
        if lineage and found["version_id"] != lineage.get("version_id"):
            raise ModelError(f"{data_dir} holds dataset version {found['version_id']}, but the model was "
                             f"trained on {lineage['version_id']}")
        return found["config"], found["version_id"], data_dir
    if "preprocess" in lineage:
        return lineage["preprocess"], lineage["version_id"], None
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


def load_predictor(model_path: str, data_dir: str | None = None, window=None, with_model: bool = True) -> Predictor:
    """Load a ``.keras`` model and the preprocessing of the data it learnt from.

    ``with_model=False`` reads only the preprocessing (``model`` is None): for
    steps that preprocess but never run the network, such as the Beam job's
    Preprocess step, whose workers would otherwise load the model for nothing.
    """
    if not storage.exists(model_path):
        raise ModelError(f"model file {model_path} does not exist")
    run_dir = find_run_dir(model_path)
    cfg, version, found_dir = preprocessing_config(run_dir, data_dir)
    if not with_model:
        return Predictor(None, model_path, cfg, window_size(window, run_dir, cfg), version, found_dir)
    model = load_model(model_path)
    expected = model.input_shape[-1]
    if expected != len(cfg["modalities"]):
        raise ModelError(f"model {model_path} takes {expected} input channels, but its preprocessing "
                         f"gives {len(cfg['modalities'])} ({', '.join(cfg['modalities'])})")
    return Predictor(model, model_path, cfg, window_size(window, run_dir, cfg), version, found_dir)


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
    """Header and voxels of a source file: the written segmentation copies the
    header, and the pictures show the scan as acquired (not the cropped input)."""
    image = parse_nifti(read_bytes(path), posixpath.basename(path))
    return image.header, load_array(image, posixpath.basename(path))


@dataclasses.dataclass
class Prepared:
    """A patient preprocessed for the network (what travels into RunInference on Beam)."""

    source: PatientSource
    label_convention: str
    challenge: challenges.Challenge
    record: object  # shared.schema.PatientRecord: cropped, normalised image and the crop geometry
    header: object  # nibabel header of the first modality, copied into the written segmentation


def prepare(predictor: Predictor, source: PatientSource, label_convention: str, threads: int | None = None) -> Prepared:
    """The data engine's preprocessing with the model's dataset config; PatientError names stage and file.

    ``threads``: how many N4 fits may run side by side in worker processes.
    The default is 1: with N4 on the coarse grid a warm pool gains only 1.1x
    (bench-predict), and a cold one costs more than that for a single patient.
    """
    threads = threads or 1
    record = preprocess(source, dict(predictor.preprocess_cfg, require_seg=False), threads=threads).record
    first = source.files[predictor.channels[0]]
    header = parse_nifti(read_bytes(first), posixpath.basename(first)).header
    if not challenges.same_classes(label_convention, predictor.challenge.label_convention):
        raise ValueError(f"a {predictor.challenge.name} model cannot write labels in numbering {label_convention!r}")
    return Prepared(source, label_convention, predictor.challenge, record, header)


def infer(predictor: Predictor, prepared: Prepared, tta: str = "none", overlap: float = 0.5,
          progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Classes (uint8) on the cropped grid, by sliding window (a region model's regions decoded to classes)."""
    image = prepared.record.image.astype(np.float32)
    expected = predictor.model.input_shape[-1]
    if image.shape[-1] != expected:
        raise PatientError("inference", f"{image.shape[-1]} channels, model takes {expected}",
                           prepared.source.files[predictor.channels[0]])
    probs = inference.sliding_window(predictor.predict_fn(), image, predictor.window, overlap=overlap, tta=tta,
                                     progress=progress)
    return inference.to_classes(probs, predictor.decoding)


def to_source_grid(cropped: np.ndarray, record) -> np.ndarray:
    """Classes on the crop back onto the source grid: undo the crop, then any resampling (nearest)."""
    classes = volume_ops.uncrop(cropped, record.crop_box, record.grid_shape)
    if record.resampled:
        classes = volume_ops.resample(classes, record.original_shape, order=0)
    return classes


def finish(prepared: Prepared, cropped: np.ndarray, display: bool = True, seconds=None) -> Prediction:
    """Undo the crop (and resampling); read the first modality as stored for the pictures when ``display``."""
    record, source = prepared.record, prepared.source
    picture = source_image(source.files[record.channels[0]])[1] if display else None
    return Prediction(
        patient_id=source.patient_id, label_convention=prepared.label_convention, challenge=prepared.challenge,
        classes=to_source_grid(cropped, record),
        affine=record.affine, header=prepared.header, spacing=volume_ops.voxel_spacing(record.affine),
        display=picture, seconds=dict(seconds or {}), source_files=dict(source.files),
    )


def predict_patient(
    predictor: Predictor,
    source: PatientSource,
    label_convention: str,
    tta: str = "none",
    overlap: float = 0.5,
    progress: Callable[[str, float], None] | None = None,
) -> Prediction:
    """Preprocess, infer and uncrop one patient; PatientError names stage and file."""
    report = progress or (lambda stage, fraction: None)
    start = time.perf_counter()
    report("preprocess", 0.0)
    prepared = prepare(predictor, source, label_convention)
    middle = time.perf_counter()
    report("inference", 0.0)
    cropped = infer(predictor, prepared, tta, overlap, lambda done, total: report("inference", done / total))
    end = time.perf_counter()
    prediction = finish(prepared, cropped, seconds={"preprocess": middle - start, "inference": end - middle})
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
    }
    if predictor is not None:
        report["model"] = predictor.model_path
        report["dataset_version_id"] = predictor.version_id
    return report


def write_outputs(prediction: Prediction, output_dir: str, predictor: Predictor | None = None,
                  pictures: bool = True) -> dict[str, str]:
    """Write ``<id>.nii.gz`` (BraTS submission naming), ``<id>.json`` and the pictures."""
    pid = prediction.patient_id
    paths = {"segmentation": posixpath.join(output_dir, f"{pid}.nii.gz"),
             "volumes": posixpath.join(output_dir, f"{pid}.json")}
    write_bytes(paths["segmentation"], segmentation_bytes(prediction))
    write_bytes(paths["volumes"], (json.dumps(volumes_report(prediction, predictor), indent=2) + "\n").encode())
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
