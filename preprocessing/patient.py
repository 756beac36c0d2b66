"""Preprocessing of one patient: NIfTI files in, one schema record out.

Stages, each named in the error a bad patient is reported with:
load -> validate -> [geometry: prediction only] -> resample (native-space
cohorts only) -> mask -> crop -> n4 -> normalize -> encode.
Everything here is plain numpy on one patient, so it runs (and is tested)
without Beam; ``pipeline.py`` only fans it out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import posixpath
import time

import numpy as np

from preprocessing import checksums, grid as grid_lib, n4
from preprocessing.discovery import PatientSource
from shared import geometry as geometry_lib, labels, layouts, schema, volume_ops
from shared import nifti_io
from shared.nifti_io import load_array, parse_nifti
from shared.spec import bbox_params
from shared.storage import read_bytes, size as file_size

AFFINE_TOLERANCE = 1e-3


class PatientError(Exception):
    """A patient that cannot be turned into a record, with the stage and file."""

    def __init__(self, stage: str, reason: str, file: str = ""):
        super().__init__(f"{stage}: {reason}" + (f" ({file})" if file else ""))
        self.stage, self.reason, self.file = stage, reason, file


@dataclasses.dataclass
class Loaded:
    arrays: dict[str, np.ndarray]  # channel -> float32 volume (seg: its stored labels)
    affines: dict[str, np.ndarray]
    names: dict[str, str]  # channel -> file basename
    sha256: dict[str, str]  # channel -> sha256 of the bytes read (kept in the record)
    headers: dict[str, object] = dataclasses.field(default_factory=dict)  # channel -> nibabel header as stored


@dataclasses.dataclass
class Result:
    record: schema.PatientRecord
    seconds: dict[str, float]  # per stage
    warnings: list[str]
    grid: grid_lib.GridRecord | None = None  # what was done to the scan's grid, with its inverse
    notes: tuple[str, ...] = ()  # what the geometry stage did (reoriented, resampled), for people
    scans: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # channels kept as stored (``keep``)


def load(source: PatientSource) -> Loaded:
    """Read every file once, checking it is the file whose checksum was fingerprinted at launch.

    The headers are kept too: prediction copies the first modality's into
    the segmentation it writes, so nothing downstream reads a file again.
    Each file goes through the bounded reader (:mod:`shared.nifti_io`): its size
    and header are checked before a voxel is inflated, so a crafted header is
    a ``load`` failure naming the file, not a worker out of memory.
    """
    arrays, affines, names, sha256, headers = {}, {}, {}, {}, {}
    for channel, path in source.files.items():
        name = posixpath.basename(path)
        try:
            nifti_io.check_file_size(file_size(path), name)
            data = read_bytes(path)
        except nifti_io.NiftiError as exc:
            raise PatientError("load", str(exc), name) from exc
        except OSError as exc:
            raise PatientError("load", f"cannot read: {exc}", name) from exc
        planned = source.checksums.get(path)
        if planned and checksums.of_bytes(data, checksums.kind_of(planned)) != planned:
            raise PatientError("load", "file changed since the run started (checksum differs)", name)
        try:
            image = parse_nifti(data, name)
            arrays[channel] = load_array(image, name)
        except ValueError as exc:
            raise PatientError("load", str(exc), name) from exc
        affines[channel] = image.affine
        headers[channel] = image.header
        names[channel] = name
        sha256[channel] = hashlib.sha256(data).hexdigest()
    return Loaded(arrays, affines, names, sha256, headers)


def validate(loaded: Loaded, convention: str) -> None:
    """Shapes and affines agree, voxels finite, labels known."""
    first = next(iter(loaded.arrays))
    shape, affine = loaded.arrays[first].shape, loaded.affines[first]
    for channel, array in loaded.arrays.items():
        name = loaded.names[channel]
        if array.ndim != 3:
            raise PatientError("validate", f"expected a 3-D volume, got shape {array.shape}", name)
        if array.shape != shape:
            raise PatientError("validate", f"shape {array.shape} differs from {shape} of {loaded.names[first]}", name)
        if not np.allclose(loaded.affines[channel], affine, atol=AFFINE_TOLERANCE):
            raise PatientError("validate", f"affine differs from that of {loaded.names[first]}", name)
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise PatientError("validate", f"{bad} NaN or Inf voxels", name)
    seg = loaded.arrays.get(layouts.SEGMENTATION)
    if seg is not None:
        unexpected = labels.unexpected_labels(seg, convention)
        if unexpected:
            raise PatientError(
                "validate",
                f"unexpected label values {unexpected} (convention {convention} allows "
                f"{list(labels.stored_values(convention))})" + _labels_fit_elsewhere(loaded, convention, seg),
                loaded.names[layouts.SEGMENTATION],
            )


def _labels_fit_elsewhere(loaded: Loaded, convention: str, seg: np.ndarray) -> str:
    """Where the files' names fit several challenges (GLI 2023/2024) and the labels decide another:
    the flag that selects it, so the message says what to pass rather than blaming the file."""
    from shared import challenges, detection

    found = detection.by_names(loaded.names.values())
    others = [n for n in found.candidates if challenges.get(n).label_convention != convention]
    decided = detection.by_labels(others, np.unique(seg)).decided if others else None
    if decided is None:
        return ""
    return (f"; these labels are {challenges.get(decided).title}'s ({detection.numbering(decided)}), whose files "
            f"are named alike: pass --config=configs/preprocess/challenge.py:{decided}")


def resample_channels(volumes: list[np.ndarray], seg, spacing, target) -> tuple[list, object, tuple, tuple]:
    """Every channel onto ``target`` mm voxels (trilinear; labels nearest).

    For native-space cohorts (MEN-RT, MET 2025 additions) whose scans come at
    any shape and spacing: the network then always sees the same voxel size.
    Returns the volumes, the segmentation, the new grid shape and its spacing.
    """
    shape = volume_ops.resampled_shape(volumes[0].shape, spacing, target)
    if min(shape) < 2:
        raise ValueError(f"a {volumes[0].shape} volume at {tuple(spacing)} mm is too small to resample")
    out = [volume_ops.resample(v, shape, order=1) for v in volumes]
    seg = volume_ops.resample(seg, shape, order=0) if seg is not None else None
    actual = tuple(float(n) * float(s) / m for n, s, m in zip(volumes[0].shape, spacing, shape))
    return out, seg, shape, actual


def brain_mask(volumes: list[np.ndarray], method: str, spacing) -> np.ndarray:
    if method == "nonzero":
        return volume_ops.nonzero_brain_mask(volumes)
    if method == "ants_get_mask":
        ants = n4._ants()
        mask = np.zeros(volumes[0].shape, dtype=bool)
        for v in volumes:
            mask |= ants.get_mask(ants.from_numpy(v, spacing=tuple(spacing))).numpy() > 0
        return mask
    raise ValueError(f"unknown brain_mask method {method!r}")


def crop_box(mask: np.ndarray, crop_cfg) -> volume_ops.Box:
    """The box of the record: ``bbox`` (default: the brain's bounding box with ``margin``, grown to a
    multiple of ``multiple``; a shape per patient), ``brain`` (``size`` around the brain's bounding box),
    ``fixed`` (``box`` on the source grid, the seeds' 48:192 x 48:192 x 5:149) or ``centered`` (as
    ``brain``, older datasets' name)."""
    if crop_cfg["mode"] == "bbox":
        return volume_ops.bbox_box(mask, *bbox_params(crop_cfg))
    if crop_cfg["mode"] == "fixed":
        return volume_ops.fixed_box(crop_cfg["box"], mask.shape)
    if crop_cfg["mode"] == "brain":
        return volume_ops.brain_box(mask, tuple(crop_cfg["size"]))
    if crop_cfg["mode"] == "centered":
        return volume_ops.centered_box(mask, tuple(crop_cfg["size"]))
    raise ValueError(f"unknown crop mode {crop_cfg['mode']!r}")


class StageBug(RuntimeError):
    """An exception in a stage that is not bad input: a bug, which must fail the job loudly."""


class _Stages:
    """Times each stage; turns bad input into a PatientError and anything else into a StageBug.

    Only the exception types a stage declares as bad input are converted
    (``InputError`` everywhere; ``ValueError`` also in the small crop and
    normalisation steps, whose only ValueErrors come from the data).  Any
    other exception is re-raised as :class:`StageBug` naming stage and file.
    """

    def __init__(self, patient_id: str):
        self.patient_id = patient_id
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, stage: str, file: str, bad_input: tuple = (n4.InputError,)):
        start = time.perf_counter()
        try:
            yield
        except PatientError:
            raise
        except bad_input as exc:
            raise PatientError(stage, str(exc), file) from exc
        except Exception as exc:
            raise StageBug(f"bug in stage {stage!r} (patient {self.patient_id}, file {file or '-'}): "
                           f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def run(self, stage: str, file: str, fn, *args, bad_input: tuple = (n4.InputError,)):
        with self.stage(stage, file, bad_input):
            return fn(*args)


def _corrected(stages, names, volumes, mask, cfg, spacing, threads: int) -> list[np.ndarray]:
    """N4 of every channel (when enabled); channels run in parallel when ``threads`` > 1."""
    if not cfg["n4"]["enabled"]:
        return list(volumes)
    params = n4.N4Params.from_config(cfg["n4"])
    with stages.stage("n4", names[0]):
        try:
            return n4.correct_channels(volumes, mask, spacing, params, threads=threads)
        except n4.ChannelError as exc:
            raise PatientError("n4", exc.reason, names[exc.index]) from exc


LOST_TUMOUR = "tumour voxels fall outside the crop box"  # the summary counts patients with this warning


def _one_hot_mask(seg, convention, box, image_grid, warnings) -> np.ndarray:
    if seg is None:  # unlabelled cohort (validation data): no classes
        return np.zeros(image_grid + (0,), dtype=np.uint8)
    classes = labels.to_classes(seg, convention)
    cropped = volume_ops.crop(classes, box)
    lost = int(np.count_nonzero(classes)) - int(np.count_nonzero(cropped))
    if lost:
        warnings.append(f"{lost} {LOST_TUMOUR} {box}")
    return labels.one_hot(cropped, labels.num_classes(convention))


def conform(loaded: Loaded, first: str, expected: geometry_lib.Expected):
    """Turn every volume into the training orientation; refuse a grid the model cannot take.

    Prediction only (training records keep their scans' own geometry, which
    the manifest summarises).  Returns the :class:`~shared.geometry.Reorientation`
    (None: already in the training orientation) and notes for people;
    :class:`~shared.geometry.GeometryError` names what the scan has and what
    the model expects.
    """
    affine, shape = loaded.affines[first], loaded.arrays[first].shape
    turn = geometry_lib.reorientation(affine, shape, expected.orientation)
    if turn is not None and turn.source not in expected.orientations:
        for channel in loaded.arrays:
            loaded.arrays[channel] = turn.forward(loaded.arrays[channel])
            loaded.affines[channel] = turn.affine
        affine, shape = turn.affine, loaded.arrays[first].shape
    else:
        turn = None  # one of the training orientations (a dataset may mix them): as stored
    resampled = geometry_lib.check(geometry_lib.ScanGeometry.of(affine, shape), expected)
    return turn, tuple(n for n in (turn.note() if turn else None, resampled) if n)


def to_image(channels: list[np.ndarray], names: list[str]) -> np.ndarray:
    """The channels stacked channels-last in the record's dtype (float16).

    float16 ends at 65504: a channel whose normalised values go beyond it
    would be stored as inf and poison training, so it fails its patient
    (bad input, naming the channel's file) instead of being written.
    """
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, per channel
        image = np.stack(channels, axis=-1).astype(schema.IMAGE_DTYPE)
    if not np.isfinite(image).all():
        for index, name in enumerate(names):
            bad = int(np.count_nonzero(~np.isfinite(image[..., index])))
            if bad:
                limit = float(np.finfo(schema.IMAGE_DTYPE).max)
                raise PatientError("encode", f"{bad} normalised voxels are not finite in "
                                   f"{np.dtype(schema.IMAGE_DTYPE).name} (overflow beyond +-{limit:.0f})", name)
    return image


def preprocess(source: PatientSource, cfg, threads: int = 1,
               expected: geometry_lib.Expected | None = None, keep: tuple[str, ...] = ()) -> Result:
    """Run every stage on one patient; raises PatientError naming stage and file.

    ``threads`` is how many cores this patient may use: 1 inside a Beam worker
    (Beam runs one patient per core, and the output is byte-reproducible),
    ``os.cpu_count()`` for one interactive patient (prediction, the web app),
    where N4 of the channels then runs in parallel.  ``expected``: the
    geometry a model was trained on (prediction): the scans are reoriented
    to it, or refused at the "geometry" stage (:func:`conform`).  ``keep``:
    channels whose voxels as stored come back in ``Result.scans`` (the
    pictures of a prediction), so no caller reads a file a second time.
    The result's ``grid`` records every change of grid, with its inverse.
    """
    stages, warnings = _Stages(source.patient_id), []
    modalities = tuple(cfg["modalities"])
    # a patient from another cohort of a multi-cohort dataset keeps its own numbering
    convention = source.label_convention or layouts.get_layout(cfg["layout"]).label_convention

    loaded = stages.run("load", "", load, source)
    stages.run("validate", "", validate, loaded, convention)
    first = loaded.names[modalities[0]]
    scans = {channel: loaded.arrays[channel] for channel in keep}  # before any stage replaces them
    stored_affine, stored_shape = loaded.affines[modalities[0]], loaded.arrays[modalities[0]].shape
    turn, notes = None, ()
    if expected is not None:
        turn, notes = stages.run("geometry", first, conform, loaded, modalities[0], expected,
                                 bad_input=(geometry_lib.GeometryError,))
    affine = loaded.affines[modalities[0]]
    spacing = volume_ops.voxel_spacing(affine)
    volumes = [loaded.arrays[m] for m in modalities]
    seg = loaded.arrays.get(layouts.SEGMENTATION)
    source_shape = tuple(int(s) for s in volumes[0].shape)
    target = geometry_lib.resample_spacing(cfg)
    if target is not None:
        volumes, seg, _, spacing = stages.run("resample", first, resample_channels, volumes, seg, spacing, target,
                                              bad_input=(n4.InputError, ValueError))

    mask = stages.run("mask", first, brain_mask, volumes, cfg["brain_mask"], spacing)
    if mask.sum() < cfg["min_brain_voxels"]:
        raise PatientError("mask", f"empty brain: {int(mask.sum())} non-zero voxels "
                           f"(fewer than {cfg['min_brain_voxels']})", first)
    box = stages.run("crop", first, crop_box, mask, cfg["crop"], bad_input=(n4.InputError, ValueError))
    mask_c = volume_ops.crop(mask, box)
    names = [loaded.names[m] for m in modalities]
    corrected = _corrected(stages, names, [volume_ops.crop(v, box) for v in volumes], mask_c, cfg, spacing, threads)
    channels = [stages.run("normalize", name, volume_ops.zscore, v, mask_c, bad_input=(n4.InputError, ValueError))
                for name, v in zip(names, corrected)]
    image = stages.run("encode", first, to_image, channels, names)
    seg_name = loaded.names.get(layouts.SEGMENTATION, "")
    onehot = stages.run("encode", seg_name, _one_hot_mask, seg, convention, box, image.shape[:3], warnings)
    record = schema.PatientRecord(
        patient_id=source.patient_id,
        grade=source.grade,
        label_convention=convention,
        channels=modalities,
        image=image,
        mask=onehot,
        crop_box=box,
        original_shape=source_shape,
        affine=np.asarray(affine, dtype=np.float64),
        grid_shape=tuple(int(s) for s in volumes[0].shape),
        spacing=tuple(float(s) for s in spacing),
        cohort=source.cohort,
        source_files=tuple(loaded.names[c] for c in source.files),
        source_sha256=tuple(loaded.sha256[c] for c in source.files),
    )
    grid = grid_lib.GridRecord(source_shape=tuple(int(s) for s in stored_shape),
                               source_affine=np.asarray(stored_affine, dtype=np.float64),
                               header=loaded.headers.get(modalities[0]), reorientation=turn,
                               oriented_shape=source_shape, grid_shape=record.grid_shape, crop_box=box)
    return Result(record=record, seconds=stages.seconds, warnings=warnings, grid=grid, notes=notes, scans=scans)
