"""Segment one patient from its raw NIfTI files, in its own space: prepare, infer, finish.

The preprocessing is the data engine's own (:func:`preprocessing.patient.preprocess`)
run with the configuration of the dataset the model was trained on (the
:class:`~serving.predictor.Predictor` read it from the run folder), so a
prediction sees exactly what training saw.  After sliding-window inference the
classes are put back into the uncropped grid with the source's affine and
header, in the numbering the source's release uses (enhancing 3 -> 4 for BraTS
2020/2021).  Finding the patient's files is :mod:`serving.inputs`'s job, and
writing the result :mod:`serving.outputs`'s.

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
import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from preprocessing import grid as grid_lib
from preprocessing.discovery import PatientSource
from preprocessing.patient import PatientError, preprocess
from shared import challenges, labels, metrics
from serving import inference

if TYPE_CHECKING:
    from serving.predictor import Predictor

#: What one patient's own files can raise on their way through prediction and
#: scoring, so that patient is reported and the cohort goes on: the core's
#: PatientError (stage and file named), ValueError (an unreadable NIfTI, a
#: geometry or label numbering the model cannot take; GeometryError is one) and
#: OSError (a file that cannot be read or written).  Anything else (TypeError,
#: KeyError, preprocessing's StageBug, ...) is a bug in this code and stops the
#: run instead of turning every patient into a "failure".
PATIENT_INPUT_ERRORS = (PatientError, ValueError, OSError)


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

    # mL per region, measured once when the prediction is made (the report, the summary and the app read it)
    volumes_ml: dict[str, float] = dataclasses.field(init=False)

    def __post_init__(self):
        self.volumes_ml = metrics.volumes_ml(self.classes, self.challenge, self.spacing)


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
