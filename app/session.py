"""What one server process keeps and does for its sessions: models, the example, one segmentation at a time.

Why a module of its own: this is the state shared by every browser session
of the process (the cached model, the inference lock, the cached example
patient) and the one expensive step, :func:`segment`.  Keeping it apart from
the upload checks (:mod:`app.uploads`) and from what the page draws
(:mod:`app.views`) lets tests run a segmentation with a tiny model and no
browser.

:func:`segment` writes the checked patient into a
``tempfile.TemporaryDirectory`` that is removed when the segmentation returns
or fails.  The prediction itself is
:func:`serving.prediction.predict_patient`, the same code as
``python -m serving.predict``: it reorients a scan stored in another
orientation and refuses one on a grid the model cannot take
(:mod:`shared.geometry`).  The result also warns when a scan's background is
not zero, the sign of a scan that was not skull-stripped.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import os
import tempfile
import threading
import uuid
from typing import Callable, Sequence

import numpy as np
import streamlit as st

from app.uploads import DEFAULT_MAX_UPLOAD_MB, InputError, PatientInput, Upload, write_patient
from shared import challenges, labels, layouts, metrics, trained_run
from shared.spec import PreprocessingSpec

DEFAULT_MODELS_DIRS = ("runs", "demo_data/runs")

# The bundled example: one synthetic patient, generated on first use (deterministic).
EXAMPLE_ID = "Synthetic_Example_001"
EXAMPLE_SEED = 2024  # not the demo cohort's seed 0: the demo model never saw this patient
EXAMPLE_SHAPE = (96, 96, 80)

# One segmentation at a time per process unless --max_concurrent says otherwise: sessions share the
# cached model, and two 240x240x155 patients at once would double the memory for no gain in speed.
# With the per-volume ceiling (shared.nifti_io) this bounds a server's memory for segmentations.
_INFERENCE_LOCK = threading.Lock()


@dataclasses.dataclass
class Result:
    """Everything the page shows after a segmentation."""

    token: str  # new for every result: the viewer's widget keys include it
    patient_id: str
    model_path: str
    prediction: object  # serving.prediction.Prediction
    images: dict[str, np.ndarray]  # modality -> the scan as uploaded (source grid)
    scores: dict[str, float] | None  # shared.metrics.score_patient against the truth
    lesions: dict | None  # evaluation.lesions.lesion_table against the truth (the challenge's own scheme)
    segmentation: bytes  # .nii.gz in the source geometry and label numbering
    summary_png: bytes
    notes: list[str]
    warnings: list[str] = dataclasses.field(default_factory=list)  # shown as warnings: the result may be wrong

    @property
    def classes(self) -> np.ndarray:
        return self.prediction.classes

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.prediction.classes.shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------
# Models: the command line (the arguments after ``--`` of ``streamlit run``) and the shared cache
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    """What the server was started with: which models to offer, the upload limit, the dataset."""

    models: list[str]
    models_dirs: list[str]
    max_upload_mb: int
    data_dir: str | None
    max_volume_mb: float | None = None  # per-volume ceiling (shared.nifti_io); None: its default
    max_concurrent: int = 1  # segmentations running at once in this server


def parse_args(argv: Sequence[str]) -> Settings:
    """``--model`` (repeatable), ``--models_dir`` (repeatable), ``--max_upload_mb``, ``--data_dir``.

    Unknown arguments are ignored: Streamlit and test runners leave their own in ``sys.argv``.
    """
    parser = argparse.ArgumentParser(prog="streamlit run app/streamlit_app.py --", add_help=False)
    parser.add_argument("--model", action="append", default=[], help="a trained .keras model")
    parser.add_argument("--models_dir", action="append", default=[], help="folder searched for *.keras models")
    parser.add_argument("--max_upload_mb", type=int, default=DEFAULT_MAX_UPLOAD_MB)
    parser.add_argument("--data_dir", default=None, help="dataset version the models were trained on")
    parser.add_argument("--max_volume_mb", type=float, default=None,
                        help="per-volume memory ceiling; a header declaring more is refused before reading")
    parser.add_argument("--max_concurrent", type=int, default=1, help="segmentations at once per server")
    args, _ = parser.parse_known_args(list(argv))
    configure_concurrency(args.max_concurrent)
    dirs = args.models_dir or ([] if args.model else [d for d in DEFAULT_MODELS_DIRS if os.path.isdir(d)])
    return Settings(args.model, dirs, max(1, args.max_upload_mb), args.data_dir, args.max_volume_mb,
                    max(1, args.max_concurrent))


def configure_concurrency(slots: int) -> None:
    """How many segmentations may run at once in this process (``--max_concurrent``, default 1)."""
    global _INFERENCE_LOCK
    if slots != getattr(_INFERENCE_LOCK, "slots", 1):
        _INFERENCE_LOCK = threading.BoundedSemaphore(max(1, slots))
        _INFERENCE_LOCK.slots = max(1, slots)  # type: ignore[attr-defined]


def find_models(settings: Settings) -> list[str]:
    """The ``--model`` paths, then every ``*.keras`` under the models folders (``model.keras`` first)."""
    found = list(settings.models)
    for folder in settings.models_dirs:
        hits = glob.glob(os.path.join(folder, "**", "*.keras"), recursive=True)
        hits.sort(key=lambda p: (os.path.dirname(p).endswith(trained_run.CHECKPOINTS_DIR), os.path.basename(p) != trained_run.MODEL_FILE, p))
        found += [h for h in hits if h not in found]
    return found


@st.cache_resource(show_spinner="Loading the model...")
def load_predictor(path: str, data_dir: str | None):
    """The model at ``path``, loaded once per process and shared by every session (Streamlit's resource cache)."""
    from serving import predictor as predictor_lib

    return predictor_lib.load_predictor(path, data_dir=data_dir)


# --------------------------------------------------------------------------
# The example case
# --------------------------------------------------------------------------


def example_shape(preprocess_cfg: dict, expected=None) -> tuple[int, int, int]:
    """The training scans' grid when the dataset recorded one (``expected``, a :class:`shared.geometry.Expected`:
    another grid would be refused), else a volume the model's crop fits in: the small example, or the BraTS
    grid for a fixed box."""
    from synthetic import cohort as synthetic_data

    if expected is not None and expected.resample_mm is None and expected.grids:
        return expected.grids[0][0]
    spec = PreprocessingSpec.from_config(preprocess_cfg)
    need = spec.min_source_shape
    if all(n <= e for n, e in zip(need, EXAMPLE_SHAPE)):
        return EXAMPLE_SHAPE
    base = synthetic_data.DEFAULT_SHAPE if spec.crop_mode == "fixed" else EXAMPLE_SHAPE
    return tuple(max(int(n), b) for n, b in zip(need, base))  # type: ignore[return-value]


def example_spacing(expected=None) -> tuple[float, float, float]:
    """The training scans' voxel size when the dataset recorded one grid to match, else 1 mm."""
    if expected is not None and expected.resample_mm is None and expected.grids:
        return tuple(expected.grids[0][1])
    return (1.0, 1.0, 1.0)


@functools.lru_cache(maxsize=4)
def example_uploads(shape: tuple[int, int, int] = EXAMPLE_SHAPE, challenge: str = "brats2020",
                    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[Upload, ...]:
    """The synthetic example patient as uploads: the challenge's modalities and true segmentation.

    Made in memory from :mod:`synthetic.cohort` with a fixed seed, in the
    challenge's own file naming and label numbering (a GLI 2024 example has a
    resection cavity, label 4), so every user and every run sees the same
    patient; nothing is written.
    """
    from synthetic import cohort as synthetic_data

    patient = synthetic_data.make_patient(EXAMPLE_ID, 1, shape, "HGG", seed=EXAMPLE_SEED, challenge=challenge,
                                          spacing=spacing)
    layout = layouts.get_layout(challenge)
    volumes = dict(patient.images, seg=patient.seg.astype(np.uint8))
    return tuple(Upload(layout.expected_name(EXAMPLE_ID, name), synthetic_data.nifti_bytes(array, patient.affine))
                 for name, array in volumes.items())


# --------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------


def progress_step(stage: str, fraction: float) -> tuple[float, str]:
    """(bar value 0..1, text) for predict_patient's ``progress(stage, fraction)``."""
    if stage == "preprocess":
        return 0.05, "Preprocessing: checking the scans, cropping, N4 bias correction, normalising..."
    if stage == "inference":
        fraction = min(max(float(fraction), 0.0), 1.0)
        return 0.3 + 0.65 * fraction, f"Inference: sliding window {100 * fraction:.0f}%"
    if stage == "done":
        return 1.0, "Done"
    return 0.0, stage


def _friendly(message: str, workdir: str) -> str:
    """A library message without the temporary folder's paths."""
    return message.replace(os.path.realpath(workdir) + os.sep, "").replace(workdir + os.sep, "")


def truth_classes(path: str, convention: str, scans: tuple[np.ndarray, Sequence[int]] | None = None) -> np.ndarray:
    """The truth as classes, read in the one numbering of its challenge (never guessed from its values:
    label 4 is enhancing tumour in 2020 but a resection cavity in GLI 2024).

    ``scans``: (affine, shape) of the scans (the prediction's grid); a truth stored in another orientation
    is turned into theirs, one on another grid is refused.
    """
    from shared import geometry
    from shared.nifti_io import load_array, read_file

    name = os.path.basename(path)
    image, _ = read_file(path)
    seg = load_array(image, name)
    if scans is not None:
        try:
            seg = geometry.align_to(seg, image.affine, scans[0], scans[1], what=f"The segmentation {name}",
                                    reference="the scans")
        except geometry.GeometryError as exc:
            raise InputError(f"{exc}; it cannot be scored against them.") from None
    bad = labels.unexpected_labels(seg, convention)
    if not bad:
        return labels.to_classes(seg, convention)
    entry = challenges.by_convention(convention)
    allowed = ", ".join(f"{v} {k}" for v, k in zip(labels.stored_values(convention), labels.class_keys(convention)))
    raise InputError(f"The segmentation {os.path.basename(path)} has label values {bad} that {entry.title} does "
                     f"not define (it numbers {allowed}); it cannot be scored against this model's classes.")


def _compact(volume: np.ndarray) -> np.ndarray:
    """float16 when that holds the values (half the memory per session), float32 otherwise."""
    finite = volume[np.isfinite(volume)]
    if finite.size and np.abs(finite).max() < 60000:
        return volume.astype(np.float16)
    return volume.astype(np.float32)


def segment(predictor, patient: PatientInput, tta: str = "none",
            progress: Callable[[str, float], None] | None = None) -> Result:
    """Write the patient to a temporary folder, predict, score against the truth, clean up.

    Bad input (PatientError from preprocessing, a truth with odd labels)
    comes back as InputError with a message naming the file.
    """
    from preprocessing.patient import PatientError
    from serving import inputs, outputs, pictures, prediction

    with tempfile.TemporaryDirectory(prefix="brats-app-") as workdir:
        try:
            folder, truth_path = write_patient(patient, workdir)
            source, convention = inputs.source_from_folder(folder, predictor)
            with _INFERENCE_LOCK:
                pred = prediction.predict_patient(predictor, source, convention, tta=tta, progress=progress,
                                                  all_scans=True)
            images = {ch: _compact(pred.scans[ch]) for ch in source.files}
            scores = lesion_scores = None
            if truth_path is not None:
                from evaluation import lesions

                truth = truth_classes(truth_path, pred.label_convention, (pred.affine, pred.classes.shape))
                scores = metrics.score_patient(pred.classes, truth, pred.challenge, pred.spacing)
                lesion_scores = lesions.lesion_table(pred.classes, truth, pred.challenge, pred.spacing)
        except PatientError as exc:
            raise InputError(_friendly(f"Cannot segment {patient.patient_id}: {exc}", workdir)) from None
        except ValueError as exc:  # a scan nibabel cannot read, labels, shapes
            raise InputError(_friendly(f"Cannot segment {patient.patient_id}: {exc}", workdir)) from None
    notes = [patient.challenge_note] if patient.challenge_note else []
    notes += [f"Files not used: {', '.join(patient.ignored)}"] if patient.ignored else []
    notes += [f"Geometry: {note}." for note in pred.notes]
    if not np.any(pred.classes):
        notes.append("The model found no tumour in this scan.")
    warning = background_warning(images, {ch: patient.files[ch].name for ch in images if ch in patient.files})
    png = pictures.summary_png(pred.display, pred.classes, pred.challenge, pred.spacing, title=pred.patient_id,
                               affine=pred.affine)
    return Result(uuid.uuid4().hex[:12], pred.patient_id, predictor.model_path, pred, images, scores,
                  lesion_scores, outputs.segmentation_bytes(pred), png, notes, [warning] if warning else [])


# A skull-stripped scan co-registered to a challenge's grid is exactly 0 outside the brain, so on its
# border; a scan with skull, scalp or scanner noise is not.  Border: this many voxels on each face.
BACKGROUND_BORDER = 2
BACKGROUND_NONZERO_SHARE = 0.05  # more of the border non-zero than this: not skull-stripped


def border_nonzero_share(volume: np.ndarray, border: int = BACKGROUND_BORDER) -> float:
    """The share of the voxels on the volume's border (``border`` voxels deep on each face) that are not 0."""
    inner = np.zeros(volume.shape, dtype=bool)
    inner[tuple(slice(border, max(border, n - border)) for n in volume.shape)] = True
    shell = volume[~inner]
    return float(np.count_nonzero(shell)) / shell.size if shell.size else 0.0


def background_warning(images: dict[str, np.ndarray], names: dict[str, str]) -> str | None:
    """A warning when a scan's background is not zero (it does not look skull-stripped), naming the files.

    The model's brain mask is "non-zero in any modality", as for BraTS: with
    the head around the brain, the crop, N4 and z-scores take in skull and
    scalp, and the segmentation is not to be trusted.
    """
    shares = {ch: border_nonzero_share(volume) for ch, volume in images.items()}
    bad = {ch: share for ch, share in shares.items() if share > BACKGROUND_NONZERO_SHARE}
    if not bad:
        return None
    listed = ", ".join(f"{names.get(ch, ch)} ({100 * share:.0f}% of its border voxels)" for ch, share in bad.items())
    return (f"The background is not zero in {listed}: these scans do not look skull-stripped. The model was "
            "trained on skull-stripped scans co-registered to the challenge's grid, as BraTS distributes them "
            "(0 outside the brain). Skull-strip the scans first (e.g. with HD-BET or SynthStrip); this "
            "segmentation may be wrong.")
