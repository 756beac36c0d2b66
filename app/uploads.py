"""Checking uploaded files before anything reaches the disk: sizes, zips, NIfTI headers, names.

Why a module of its own: everything here is about untrusted bytes from the
browser, and none of it needs a model, Streamlit or TensorFlow, so each
refusal can be tested with a few bytes.  The page (``app/streamlit_app.py``)
hands the uploaded files over as :class:`Upload` (name and bytes) and gets
back a :class:`PatientInput`, or an :class:`InputError` whose message is
shown on the page as it is.

Uploads are checked before anything is written: total size against the limit,
zips opened in memory (members with absolute or ``..`` paths, or links, refuse
the whole zip; the expanded size counts against the limit too), each file's
NIfTI header read, the challenge and its modalities recognised from the
file names (:mod:`shared.challenges`; the model's own challenge first, or the
one the user picks), and their shapes compared.  Only then are the files
written (:func:`write_patient`), under their base names, into the temporary
folder that :func:`app.session.segment` makes and removes.
"""

from __future__ import annotations

import dataclasses
import io
import os
import posixpath
import re
import stat
import zipfile
from typing import Iterable, Sequence

from shared import challenges, detection, layouts, nifti_io

MB = 1 << 20
DEFAULT_MAX_UPLOAD_MB = 500  # the uploader rounds a limit over 512 MB up to "1GB per file"


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
    challenge_note: str = ""  # which challenge the files were taken as, and why (shown on the page)


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


def nifti_shape(upload: Upload, limit_mb: float | None = None) -> tuple[int, ...]:
    """The image shape from its checked header (:func:`shared.nifti_io.read_header`: dimensions, datatype,
    declared bytes against the file and the per-volume ceiling); InputError if it is not a usable NIfTI.
    The header is checked before anything else is inflated, so a 2 MB file claiming 1024³ voxels costs
    nothing; then the stream is inflated in small chunks and dropped, to check it holds those voxels."""
    if not is_nifti_name(upload.name):
        raise InputError(f"{upload.name} is not a NIfTI file: upload .nii or .nii.gz scans "
                         "(DICOM series must be converted first, e.g. with dcm2niix).")
    try:
        shape = nifti_io.check_complete(upload.data, upload.name, limit_mb).shape
    except nifti_io.NiftiError as exc:
        raise InputError(f"{exc}.") from None
    if len(shape) >= 3:
        return shape[:3] if all(s == 1 for s in shape[3:]) else shape
    raise InputError(f"{upload.name} is a {len(shape)}-D image; a 3-D scan is needed.")


def check_upload(upload: Upload, limit_mb: float | None = None) -> str | None:
    """One file as it arrives: None if its header is usable, else the message to show beside the uploader.

    Header only (a few hundred bytes inflated), as it runs on every rerun of the page; the whole
    stream is checked when the patient is prepared (:func:`nifti_shape`).  A zip waits for that too.
    """
    if upload.name.lower().endswith(".zip"):
        return None
    if not is_nifti_name(upload.name):
        return f"{upload.name} is not a NIfTI file: upload .nii or .nii.gz scans, or one zip of them."
    try:
        nifti_io.read_header(upload.data, upload.name, limit_mb)
    except nifti_io.NiftiError as exc:
        return f"{exc}."
    return None


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
    raise InputError("Cannot use these files: " + "; ".join(problems) + f". Received: {got}. (A file the "
                     "uploader refused, for its size say, is not among the files received.)")


def check_numbering(found: str, model: challenges.Challenge | None) -> None:
    """Refuse files of a challenge whose labels mean other tissues than the model's classes."""
    if model is None:
        return
    entry = challenges.get(found)
    if not challenges.same_classes(entry.label_convention, model.label_convention):
        raise InputError(
            f"These files belong to {entry.title} (labels {detection.numbering(found)}), but the model was "
            f"trained on {model.title} (labels {detection.numbering(model.name)}): its label numbering differs, "
            "so its segmentation would be read wrongly. Choose a model trained on this challenge, or pick the "
            "right challenge in the sidebar if the names are misleading.")


def _patient_id(name: str, layout: str, channel: str) -> str:
    """The id in front of the modality token, made safe as a folder name."""
    suffix = next(s for s in layouts.LAYOUTS[layout].suffixes(channel) if name.lower().endswith(s))
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name[: -len(suffix)]).strip("._-")
    return stem or "patient"


def truth_labels(truth: Upload, limit_mb: float | None = None) -> list[int]:
    """The label values present in a segmentation upload, read through the bounded reader."""
    import numpy as np

    try:
        image = nifti_io.parse_nifti(truth.data, truth.name, limit_mb)
        return [int(v) for v in np.unique(np.rint(nifti_io.load_array(image, truth.name)))]
    except nifti_io.NiftiError as exc:
        raise InputError(f"{exc}.") from None


def choose_challenge(names: Sequence[str], truth: Upload | None, model: challenges.Challenge | None,
                     pick: str | None, limit_mb: float | None = None) -> tuple[str | None, str]:
    """(challenge, the sentence saying why) from the names, then a segmentation's labels; never a guess.

    None when the names identify nothing (the caller falls back on modality
    endings with the model's naming first).  Files named as another challenge
    than the one picked are refused; names shared by several challenges (GLI
    2023/2024) are decided by the segmentation's labels, else by the model's
    own challenge when it is one of them (and the page says so), else the
    user is asked to pick.
    """
    found = detection.by_names(names)
    if pick:
        if found.how == "names" and found.candidates and pick not in found.candidates:
            raise InputError(f"These files are not named as {challenges.get(pick).title} (picked in the sidebar) "
                             f"names them: they are {found.describe()}. Pick the challenge they come from, or "
                             "'detect from the file names'.")
        return pick, f"Challenge: {challenges.get(pick).title}, as picked in the sidebar."
    if found.how != "names" or not found.candidates:
        return None, ""
    if found.decided:
        return found.decided, f"Challenge: {challenges.get(found.decided).title}, detected from the file names."
    if truth is not None:
        values = truth_labels(truth, limit_mb)
        decided = detection.by_labels(found.candidates, values).decided
        if decided is None:
            raise InputError(f"The segmentation {truth.name} has labels {[v for v in values if v]}, which none of "
                             f"{', '.join(challenges.get(n).title for n in found.candidates)} (the challenges these "
                             "files are named as) numbers.")
        return decided, (f"Challenge: {challenges.get(decided).title}, from the file names and the labels of "
                         f"{truth.name} ({[v for v in values if v]}).")
    if model is not None and model.name in found.candidates:
        others = [challenges.get(n).title for n in found.candidates if n != model.name]
        return model.name, (f"Challenge: {model.title}, the model's own. These names fit {', '.join(others)} "
                            "too; upload the segmentation, or pick the challenge in the sidebar, to decide.")
    raise InputError(detection.ambiguity(found.candidates, "pick the challenge in the sidebar ('Challenge of "
                                         "the uploads'), or upload the patient's segmentation"))


def prepare(uploads: Sequence[Upload], channels: Sequence[str], limit_mb: int = DEFAULT_MAX_UPLOAD_MB,
            truth: Upload | None = None, model: challenges.Challenge | None = None,
            pick: str | None = None, volume_mb: float | None = None) -> PatientInput:
    """Check one patient's uploads (files and/or a zip) and sort them by modality.

    A segmentation among the files (``_seg.nii.gz``, ``-seg.nii.gz``,
    ``_gtv.nii.gz``) becomes the truth to compare with, unless ``truth`` is
    given separately.  The challenge comes from :func:`choose_challenge`;
    files whose labels mean other tissues than the model's are refused, with
    both numberings named.  Every header is checked (``volume_mb``: the
    per-volume ceiling) before anything is inflated.
    """
    if not uploads:
        raise InputError("Upload the patient's scans first: the four modalities as .nii/.nii.gz files, "
                         "or one zip of the patient folder.")
    check_size(list(uploads) + ([truth] if truth else []), limit_mb)
    files = expand(uploads, limit_mb)
    for f in files:
        if not is_nifti_name(f.name):
            raise InputError(f"{f.name} is not a NIfTI file: upload .nii or .nii.gz scans, or one zip of them.")
        nifti_shape(f, volume_mb)
    if truth is not None:
        nifti_shape(truth, volume_mb)
    by_name = {f.name: f for f in files}
    segs = [f for f in files if any(is_segmentation_name(f.name, n) for n in layouts.LAYOUTS)]
    chosen_name, note = choose_challenge(list(by_name), truth or (segs[0] if len(segs) == 1 else None), model,
                                         pick, volume_mb)
    preferred = chosen_name or (model.name if model is not None else None)
    layout, by_channel, seg_name = detect_modalities(list(by_name), channels, preferred)
    if chosen_name and layout != chosen_name:
        raise InputError(f"These files are not named as {challenges.get(chosen_name).title} names them "
                         f"(expected e.g. {layouts.get_layout(chosen_name).expected_name('<case>', channels[0])}).")
    note = note or (f"Challenge: {challenges.get(layout).title}, by the modality endings of the file names "
                    "(the model's naming first); pick it in the sidebar if that is wrong.")
    check_numbering(layout, model)
    chosen = {ch: by_name[n] for ch, n in by_channel.items()}
    if truth is None and seg_name is not None:
        truth = by_name[seg_name]
    shapes = {ch: nifti_shape(f, volume_mb) for ch, f in chosen.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{ch} {'x'.join(map(str, s))}" for ch, s in shapes.items())
        raise InputError(f"The scans' shapes disagree ({listed}); all modalities of a patient must share one grid.")
    shape = next(iter(shapes.values()))
    if truth is not None:
        truth_shape = nifti_shape(truth, volume_mb)
        if truth_shape != shape:
            raise InputError(f"The segmentation {truth.name} is {'x'.join(map(str, truth_shape))}, but the scans "
                             f"are {'x'.join(map(str, shape))}.")
    used = {f.name for f in chosen.values()} | ({truth.name} if truth is not None else set())
    pid = _patient_id(by_channel[channels[0]], layout, channels[0])
    return PatientInput(pid, layout, chosen, shape, truth, sorted(n for n in by_name if n not in used), note)


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


def is_segmentation_name(name: str, challenge: str) -> bool:
    """Whether an example upload is the challenge's segmentation file (``_seg``, ``-seg``, ``_gtv``)."""
    return name.lower().endswith(layouts.get_layout(challenge).suffixes(layouts.SEGMENTATION))

