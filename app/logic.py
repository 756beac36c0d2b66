"""What the web app does, without Streamlit, so tests can call it directly.

The page (``app/streamlit_app.py``) hands the uploaded files over as
:class:`Upload` (name and bytes) and gets back either an :class:`InputError`,
whose message is shown on the page as it is, or a :class:`Result` holding
everything the page shows and offers for download.

Uploads are checked before anything is written: total size against the limit,
zips opened in memory (members with absolute or ``..`` paths, or links, refuse
the whole zip; the expanded size counts against the limit too), each file's
NIfTI header read, the challenge and its modalities recognised from the
file names (:mod:`shared.challenges`; the model's own challenge first, or the
one the user picks), and their shapes compared.  Only then are the
files written, under their base names, into a ``tempfile.TemporaryDirectory``
that is removed when the segmentation returns or fails.  The prediction itself
is :func:`serving.prediction.predict_patient`, the same code as
``python -m serving.predict``: it reorients a scan stored in another
orientation and refuses one on a grid the model cannot take
(:mod:`shared.geometry`).  The page also warns when a scan's background is
not zero, the sign of a scan that was not skull-stripped.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import gzip
import io
import os
import posixpath
import re
import stat
import tempfile
import threading
import uuid
import zipfile
from typing import Callable, Iterable, Sequence

import numpy as np

from shared import challenges, labels, layouts, metrics
from shared.spec import PreprocessingSpec

MB = 1 << 20
DEFAULT_MAX_UPLOAD_MB = 600
DEFAULT_MODELS_DIRS = ("runs", "demo_data/runs")

# The bundled example: one synthetic patient, generated on first use (deterministic).
EXAMPLE_ID = "Synthetic_Example_001"
EXAMPLE_SEED = 2024  # not the demo cohort's seed 0: the demo model never saw this patient
EXAMPLE_SHAPE = (96, 96, 80)

MODALITY_TITLES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce (contrast)", "t2": "T2"}

# One segmentation at a time per process: sessions share the cached model, and
# two 240x240x155 patients at once would double the memory for no gain in speed.
_INFERENCE_LOCK = threading.Lock()


class InputError(Exception):
    """Input the app cannot use; the message is written for the user and shown as it is."""


@dataclasses.dataclass(frozen=True)
class Upload:
    """One uploaded file (or zip member): its base name and bytes."""

    name: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclasses.dataclass
class PatientInput:
    """One patient's checked files, ready to be written and segmented."""

    patient_id: str
    layout: str  # the challenge whose naming (and so label numbering) the files follow
    files: dict[str, Upload]  # modality -> file
    shape: tuple[int, ...]
    truth: Upload | None = None  # a segmentation to compare with
    ignored: list[str] = dataclasses.field(default_factory=list)  # files that were not used


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
# Command line (the arguments after ``--`` of ``streamlit run``)
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    models: list[str]
    models_dirs: list[str]
    max_upload_mb: int
    data_dir: str | None


def parse_args(argv: Sequence[str]) -> Settings:
    """``--model`` (repeatable), ``--models_dir`` (repeatable), ``--max_upload_mb``, ``--data_dir``.

    Unknown arguments are ignored: Streamlit and test runners leave their own in ``sys.argv``.
    """
    parser = argparse.ArgumentParser(prog="streamlit run app/streamlit_app.py --", add_help=False)
    parser.add_argument("--model", action="append", default=[], help="a trained .keras model")
    parser.add_argument("--models_dir", action="append", default=[], help="folder searched for *.keras models")
    parser.add_argument("--max_upload_mb", type=int, default=DEFAULT_MAX_UPLOAD_MB)
    parser.add_argument("--data_dir", default=None, help="dataset version the models were trained on")
    args, _ = parser.parse_known_args(list(argv))
    dirs = args.models_dir or ([] if args.model else [d for d in DEFAULT_MODELS_DIRS if os.path.isdir(d)])
    return Settings(args.model, dirs, max(1, args.max_upload_mb), args.data_dir)


def find_models(settings: Settings) -> list[str]:
    """The ``--model`` paths, then every ``*.keras`` under the models folders (``model.keras`` first)."""
    found = list(settings.models)
    for folder in settings.models_dirs:
        hits = glob.glob(os.path.join(folder, "**", "*.keras"), recursive=True)
        hits.sort(key=lambda p: (os.path.dirname(p).endswith("checkpoints"), os.path.basename(p) != "model.keras", p))
        found += [h for h in hits if h not in found]
    return found


# --------------------------------------------------------------------------
# Uploads: size, zips, NIfTI headers, modalities, shapes
# --------------------------------------------------------------------------


def is_nifti_name(name: str) -> bool:
    return name.lower().endswith(layouts.NIFTI_EXTENSIONS)


def check_size(uploads: Iterable[Upload], limit_mb: int) -> None:
    """Refuse an upload whose files add up to more than ``limit_mb`` MB."""
    total = sum(u.size for u in uploads)
    if total > limit_mb * MB:
        raise InputError(f"The upload is {total / MB:.1f} MB, over this app's limit of {limit_mb} MB. "
                         "Upload only the four modalities (and a segmentation), compressed as .nii.gz.")


def _unsafe_member(name: str) -> bool:
    """Would extracting this member by its path write outside the target folder?"""
    path = name.replace("\\", "/")
    parts = path.split("/")
    return path.startswith("/") or re.match(r"^[A-Za-z]:", path) is not None or ".." in parts


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def unzip(upload: Upload, limit_mb: int) -> list[Upload]:
    """The NIfTI files inside a zip (any folder depth), read in memory.

    Refuses the whole zip if a member's path is absolute or climbs out with
    ``..`` (zip slip), if a member is a link, or if the expanded files exceed
    ``limit_mb`` (zip bomb).  Other files (README, JSON, macOS metadata) are skipped.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(upload.data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise InputError(f"{upload.name} is not a readable zip file ({exc}).") from None
    for info in members:
        if _unsafe_member(info.filename):
            raise InputError(f"{upload.name} was refused: its member {info.filename!r} points outside the "
                             "patient folder (absolute path or '..').")
        if _is_link(info):
            raise InputError(f"{upload.name} was refused: its member {info.filename!r} is a link.")
    files, budget = [], limit_mb * MB
    for info in members:
        parts = info.filename.replace("\\", "/").split("/")
        name = parts[-1]
        if info.is_dir() or not is_nifti_name(name) or name.startswith(".") or "__MACOSX" in parts:
            continue
        try:
            with archive.open(info) as handle:
                data = handle.read(budget + 1)  # never trust the size the zip declares
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            raise InputError(f"{upload.name}: cannot extract {info.filename} ({exc}).") from None
        budget -= len(data)
        if budget < 0:
            raise InputError(f"{upload.name} expands to more than this app's limit of {limit_mb} MB.")
        files.append(Upload(name, data))
    if not files:
        raise InputError(f"{upload.name} holds no .nii or .nii.gz file.")
    return files


def expand(uploads: Sequence[Upload], limit_mb: int) -> list[Upload]:
    """Uploads with every zip replaced by its NIfTI members; duplicate names are refused."""
    check_size(uploads, limit_mb)
    files: list[Upload] = []
    for upload in uploads:
        files += unzip(upload, limit_mb) if upload.name.lower().endswith(".zip") else [upload]
    names = [f.name for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"More than one file is named {', '.join(twice)}; upload one patient at a time.")
    return files


def nifti_shape(upload: Upload) -> tuple[int, ...]:
    """The image shape from a NIfTI-1/2 header (gzipped or not); InputError if it is not NIfTI."""
    import nibabel as nib

    not_nifti = InputError(f"{upload.name} is not a NIfTI file: upload .nii or .nii.gz scans "
                           "(DICOM series must be converted first, e.g. with dcm2niix).")
    if not is_nifti_name(upload.name):
        raise not_nifti
    try:
        head = gzip.GzipFile(fileobj=io.BytesIO(upload.data)).read(544) if upload.data[:2] == b"\x1f\x8b" \
            else upload.data[:544]
    except (OSError, EOFError, gzip.BadGzipFile):
        raise InputError(f"{upload.name} is not a readable gzip file (truncated or not .nii.gz).") from None
    for header_class in (nib.Nifti1Header, nib.Nifti2Header):
        size = header_class.sizeof_hdr
        if len(head) < size or size not in (int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")):
            continue
        try:
            header = header_class.from_fileobj(io.BytesIO(head[:size]), check=True)
            shape = tuple(int(s) for s in header.get_data_shape())
        except Exception:  # nibabel raises several types for a bad header
            continue
        if len(shape) >= 3:
            return shape[:3] if all(s == 1 for s in shape[3:]) else shape
        raise InputError(f"{upload.name} is a {len(shape)}-D image; a 3-D scan is needed.")
    raise not_nifti


def _expected_names(channel: str) -> str:
    """'_flair.nii.gz (BraTS 2020/2021) or -t2f.nii.gz (BraTS 2023...)' for a message."""
    seen: dict[str, list[str]] = {}
    for layout in layouts.LAYOUTS.values():
        if layout.suffixes(channel):
            seen.setdefault(layout.suffixes(channel)[0], []).append(layout.name)
    return " or ".join(f"{s} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" for s, names in seen.items())


def _layout_order(preferred: str | None) -> list[layouts.Layout]:
    """Every challenge's naming, the preferred one (the model's, or the user's pick) first."""
    names = list(layouts.LAYOUTS)
    if preferred in names:
        names.remove(preferred)
        names.insert(0, preferred)
    return [layouts.LAYOUTS[n] for n in names]


def detect_modalities(names: Sequence[str], channels: Sequence[str],
                      preferred: str | None = None) -> tuple[str, dict[str, str], str | None]:
    """(challenge, modality -> file name, segmentation name or None) by the files' name endings.

    Every challenge's naming is tried, ``preferred`` first (2020/2021
    ``_flair``, 2023+ ``-t2f``, MEN-RT ``_t1c``...); the first one that finds
    exactly one file per modality wins.  GLI 2023 and GLI 2024 name files
    alike, so the model's challenge (or the user's pick) decides between them.
    """
    best: tuple[int, str, dict[str, list[str]]] | None = None
    for layout in _layout_order(preferred):
        hits = {ch: [n for n in names if n.lower().endswith(layout.suffixes(ch))] for ch in channels}
        if all(len(h) == 1 for h in hits.values()):
            segs = [n for n in names if n.lower().endswith(layout.suffixes(layouts.SEGMENTATION))]
            return layout.name, {ch: h[0] for ch, h in hits.items()}, (segs[0] if len(segs) == 1 else None)
        score = sum(len(h) == 1 for h in hits.values())
        if best is None or score > best[0]:
            best = (score, layout.name, hits)
    assert best is not None
    problems = []
    for channel, hit in best[2].items():
        if not hit:
            problems.append(f"missing modality {channel}: no file name ends in {_expected_names(channel)}")
        elif len(hit) > 1:
            problems.append(f"{len(hit)} files for modality {channel} ({', '.join(sorted(hit))}); upload one patient")
    got = ", ".join(sorted(names)) or "no files"
    raise InputError("Cannot use these files: " + "; ".join(problems) + f". Received: {got}.")


def check_numbering(found: str, model: challenges.Challenge | None) -> None:
    """Refuse files of a challenge whose labels mean other tissues than the model's classes."""
    if model is None:
        return
    entry = challenges.get(found)
    if not challenges.same_classes(entry.label_convention, model.label_convention):
        raise InputError(
            f"These files belong to {entry.title} (labels {', '.join(entry.class_keys[1:])}), but the model was "
            f"trained on {model.title} (labels {', '.join(model.class_keys[1:])}): its label numbering differs, "
            "so its segmentation would be read wrongly. Choose a model trained on this challenge, or pick the "
            "right challenge in the sidebar if the names are misleading.")


def _patient_id(name: str, layout: str, channel: str) -> str:
    """The id in front of the modality token, made safe as a folder name."""
    suffix = next(s for s in layouts.LAYOUTS[layout].suffixes(channel) if name.lower().endswith(s))
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name[: -len(suffix)]).strip("._-")
    return stem or "patient"


def prepare(uploads: Sequence[Upload], channels: Sequence[str], limit_mb: int = DEFAULT_MAX_UPLOAD_MB,
            truth: Upload | None = None, model: challenges.Challenge | None = None,
            pick: str | None = None) -> PatientInput:
    """Check one patient's uploads (files and/or a zip) and sort them by modality.

    A segmentation among the files (``_seg.nii.gz``, ``-seg.nii.gz``,
    ``_gtv.nii.gz``) becomes the truth to compare with, unless ``truth`` is
    given separately.  The challenge comes from the file names (``pick``, the
    user's choice, or else the ``model``'s own challenge tried first), and
    files whose labels mean other tissues than the model's are refused.
    """
    if not uploads:
        raise InputError("Upload the patient's scans first: the four modalities as .nii/.nii.gz files, "
                         "or one zip of the patient folder.")
    check_size(list(uploads) + ([truth] if truth else []), limit_mb)
    files = expand(uploads, limit_mb)
    for f in files:
        if not is_nifti_name(f.name):
            raise InputError(f"{f.name} is not a NIfTI file: upload .nii or .nii.gz scans, or one zip of them.")
    preferred = pick or (model.name if model is not None else None)
    layout, by_channel, seg_name = detect_modalities([f.name for f in files], channels, preferred)
    if pick and layout != pick:
        raise InputError(f"These files are not named as {challenges.get(pick).title} names them "
                         f"(expected e.g. {layouts.get_layout(pick).expected_name('<case>', channels[0])}).")
    check_numbering(layout, model)
    by_name = {f.name: f for f in files}
    chosen = {ch: by_name[n] for ch, n in by_channel.items()}
    if truth is None and seg_name is not None:
        truth = by_name[seg_name]
    shapes = {ch: nifti_shape(f) for ch, f in chosen.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{ch} {'x'.join(map(str, s))}" for ch, s in shapes.items())
        raise InputError(f"The scans' shapes disagree ({listed}); all modalities of a patient must share one grid.")
    shape = next(iter(shapes.values()))
    if truth is not None:
        truth_shape = nifti_shape(truth)
        if truth_shape != shape:
            raise InputError(f"The segmentation {truth.name} is {'x'.join(map(str, truth_shape))}, but the scans "
                             f"are {'x'.join(map(str, shape))}.")
    used = {f.name for f in chosen.values()} | ({truth.name} if truth is not None else set())
    pid = _patient_id(by_channel[channels[0]], layout, channels[0])
    return PatientInput(pid, layout, chosen, shape, truth, sorted(n for n in by_name if n not in used))


def _write_inside(folder: str, name: str, data: bytes) -> str:
    """Write ``folder/<base name>``, refusing any path that would leave ``folder``."""
    base = re.sub(r"[^A-Za-z0-9_.+-]+", "_", posixpath.basename(name.replace("\\", "/")))
    target = os.path.realpath(os.path.join(folder, base))
    if base in ("", ".", "..") or os.path.dirname(target) != os.path.realpath(folder):
        raise InputError(f"refused to write {name!r} outside the temporary folder")
    with open(target, "wb") as handle:
        handle.write(data)
    return target


def write_patient(patient: PatientInput, workdir: str) -> tuple[str, str | None]:
    """Write the scans into ``workdir/<patient id>/`` and the truth into ``workdir/truth/``."""
    folder = os.path.join(workdir, patient.patient_id)
    os.makedirs(folder)
    for upload in patient.files.values():
        _write_inside(folder, upload.name, upload.data)
    truth_path = None
    if patient.truth is not None:
        os.makedirs(os.path.join(workdir, "truth"))
        truth_path = _write_inside(os.path.join(workdir, "truth"), patient.truth.name, patient.truth.data)
    return folder, truth_path


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


def is_segmentation_name(name: str, challenge: str) -> bool:
    """Whether an example upload is the challenge's segmentation file (``_seg``, ``-seg``, ``_gtv``)."""
    return name.lower().endswith(layouts.get_layout(challenge).suffixes(layouts.SEGMENTATION))


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
    from shared.nifti_io import load_array, parse_nifti
    from shared.storage import read_bytes

    name = os.path.basename(path)
    image = parse_nifti(read_bytes(path), name)
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
    from serving import pictures, prediction

    with tempfile.TemporaryDirectory(prefix="brats-app-") as workdir:
        try:
            folder, truth_path = write_patient(patient, workdir)
            source, convention = prediction.source_from_folder(folder, predictor)
            with _INFERENCE_LOCK:
                pred = prediction.predict_patient(predictor, source, convention, tta=tta, progress=progress)
            images = {ch: _compact(pred.display if ch == predictor.channels[0] else prediction.source_image(path)[1])
                      for ch, path in source.files.items()}
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
    notes = [f"Files not used: {', '.join(patient.ignored)}"] if patient.ignored else []
    notes += [f"Geometry: {note}." for note in pred.notes]
    if not np.any(pred.classes):
        notes.append("The model found no tumour in this scan.")
    warning = background_warning(images, {ch: patient.files[ch].name for ch in images if ch in patient.files})
    png = pictures.summary_png(pred.display, pred.classes, pred.challenge, pred.spacing, title=pred.patient_id,
                               affine=pred.affine)
    return Result(uuid.uuid4().hex[:12], pred.patient_id, predictor.model_path, pred, images, scores,
                  lesion_scores, prediction.segmentation_bytes(pred), png, notes, [warning] if warning else [])


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


# --------------------------------------------------------------------------
# What the page shows
# --------------------------------------------------------------------------


def table_rows(challenge: challenges.Challenge) -> list[tuple[str, str]]:
    """(row title, structure key) for the volumes table: each label, then each region that is not a label."""
    rows = [(f"{label.title} ({label.key})", label.key) for label in challenge.labels]
    keys = {label.key for label in challenge.labels}
    for region, values in challenge.regions.items():
        if region not in keys:
            members = " + ".join(challenge.labels[challenge.class_of(v) - 1].key for v in values)
            rows.append((f"{region} = {members}", region))
    return rows


def volumes_table(result: Result) -> list[dict[str, object]]:
    """One row per label and region: volume in mL, and with a truth its volume, Dice and HD95."""
    volumes = result.prediction.volumes_ml()
    rows = []
    for title, key in table_rows(result.prediction.challenge):
        row: dict[str, object] = {"Region": title, "Volume (mL)": round(volumes[key], 2)}
        if result.scores is not None:
            row["True volume (mL)"] = round(result.scores[f"volume_truth_{key}_ml"], 2)
            row["Dice"] = round(result.scores[f"dice_{key}"], 3)
            row["HD95 (mm)"] = round(result.scores[f"hd95_{key}"], 2)
        rows.append(row)
    return rows


def lesion_rows(result: Result) -> list[dict[str, object]]:
    """The lesion-wise table (one row per region) as the leaderboards score it, when a truth was given."""
    if result.lesions is None:
        return []
    names = {"dice": "Lesion Dice", "hd95": "Lesion HD95 (mm)", "tp": "TP", "fp": "FP", "fn": "FN",
             "f1": "F1", "nsd": "NSD", "pq": "PQ"}
    rows = []
    for entry in result.lesions["regions"]:
        row: dict[str, object] = {"Region": entry["region"]}
        for key, title in names.items():
            if key in entry:
                value = entry[key]
                row[title] = int(value) if key in ("tp", "fp", "fn") else round(float(value), 3)
        rows.append(row)
    return rows


def default_centre(result: Result) -> tuple[int, int, int]:
    from serving import pictures

    return pictures.tumour_centre(result.classes)


def view_images(result: Result, modality: str, centre: Sequence[int], show: Sequence[int] | None = None,
                alpha: float = 0.45, size: int = 360) -> dict[str, np.ndarray]:
    """Axial, coronal and sagittal RGB slices through ``centre`` with the overlay.

    Radiological layout (as :mod:`serving.pictures` draws it), scaled so the
    longer side is ``size`` pixels at the voxels' physical aspect ratio.
    """
    from PIL import Image

    from serving import pictures

    spacing = result.prediction.spacing
    slices = pictures.orthogonal_slices(result.images[modality], result.classes, centre, result.prediction.affine)
    out = {}
    for view, (image, classes) in slices.items():
        rgb = pictures.overlay_rgb(image, classes, result.prediction.challenge,
                                   show=None if show is None else tuple(show), alpha=alpha)
        _, row, col = pictures.VIEWS[view]
        height, width = rgb.shape[0] * float(spacing[row]), rgb.shape[1] * float(spacing[col])
        scale = size / max(height, width)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        out[view] = np.asarray(Image.fromarray(rgb).resize(target, Image.Resampling.NEAREST))
    return out


def class_titles(challenge: challenges.Challenge) -> dict[int, str]:
    """Class -> the label's name, for the page's toggles."""
    return {cls: f"{label.title} ({label.key})" for cls, label in enumerate(challenge.labels, start=1)}


def legend_html(challenge: challenges.Challenge, show: Sequence[int] | None = None) -> str:
    """The overlay legend as inline HTML (coloured squares in the overlay's RGB), named as the challenge names them."""
    from serving import pictures

    show = range(1, challenge.num_classes) if show is None else show
    titles = class_titles(challenge)
    items = []
    for cls, _, rgb in pictures.legend_entries(challenge):
        style = "opacity:0.3;" if cls not in show else ""
        items.append(f'<span style="{style}margin-right:1.2em;white-space:nowrap">'
                     f'<span style="display:inline-block;width:0.9em;height:0.9em;background:rgb{rgb};'
                     f'border:1px solid #888;vertical-align:middle;margin-right:0.35em"></span>'
                     f"{titles[cls]}</span>")
    return "".join(items)


WINDOWS = {"patch": "training patch (as nnU-Net)", "volume": "whole crop in one pass"}


def inference_defaults(model_path: str) -> tuple[str, str, str]:
    """(window, TTA, a sentence saying why) preselected in the sidebar for a model.

    The run's recorded best on its validation split (``inference.json``),
    else the training patch without TTA.  Which window is better depends on
    the model (the demo's tiny model: the whole crop by 0.10 WT Dice), so the
    page follows the measurement rather than one fixed rule.
    """
    from serving import prediction

    settings = prediction.inference_settings(model_path)
    recorded = prediction.recorded_inference(model_path)
    if recorded is None:
        return settings.window, settings.tta, (
            "No window/TTA choice recorded for this model: training patch, no TTA. Record one with "
            f"`python -m evaluation.choose_inference --model={model_path}`.")
    scores = ", ".join(f"{c['window']}/{c['tta']} {c['patient_dice_mean']:.3f}" for c in recorded["candidates"])
    return settings.window, settings.tta, (
        f"Preselected: the best window/TTA on the run's {recorded['patients']} validation patient(s), by mean "
        f"per-patient Dice ({scores}).")


def model_summary(predictor) -> str:
    """A line on what the model expects, for the sidebar."""
    crop_text = PreprocessingSpec.from_config(predictor.preprocess_cfg).describe_crop()
    entry = predictor.challenge
    return (f"Trained on {entry.title}: labels {', '.join(entry.class_keys[1:])}. "
            f"Modalities {', '.join(predictor.channels)}; crop {crop_text}; window "
            f"{'x'.join(map(str, predictor.window))}; trained on dataset {predictor.version_id} "
            f"({predictor.layout} naming). {geometry_text(predictor)}")


def geometry_text(predictor) -> str:
    """What scans the model takes: skull-stripped, co-registered, and the training geometry it checks."""
    expected = predictor.expected
    grid = predictor.challenge.grid
    atlas = ("in native space (any grid)" if grid.native
             else f"co-registered to the {grid.name} grid ({'x'.join(map(str, grid.shape))} at "
                  f"{'x'.join(f'{s:g}' for s in grid.spacing_mm)} mm)")
    return (f"Scans must be skull-stripped and {atlas}, as the challenge distributes them. Training scans: "
            f"{expected.describe()}; another orientation is reoriented, "
            + ("another spacing resampled." if expected.resample_mm is not None else "another grid refused."))
