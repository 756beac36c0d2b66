"""How each BraTS release names its folders and files.

A layout turns a patient folder's file listing into one path per modality
(plus the segmentation), and explains precisely what is missing when it
cannot, so the data engine and prediction can reject a patient with a reason
that names the file a researcher has to fix.

The naming itself is data in :mod:`shared.challenges`; this module matches
files against it.  The project calls modalities by their BraTS 2020 names
(flair, t1, t1ce, t2) whatever the release; 2023+ files (t2f, t1n, t1c, t2w)
are mapped onto them.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import fnmatch
import posixpath
import re

from shared import challenges

MODALITIES = challenges.MODALITIES
SEGMENTATION = challenges.SEGMENTATION
NIFTI_EXTENSIONS = (".nii.gz", ".nii")


@dataclasses.dataclass(frozen=True)
class Layout:
    """File naming of one challenge (its registry entry's :class:`~shared.challenges.Naming`)."""

    name: str
    patient_dir: str  # regular expression a patient folder name must match
    separator: str  # between the patient id and the modality token
    tokens: dict[str, str]  # canonical modality (and "seg") -> file token
    label_convention: str
    grade_table: str | None = None  # CSV in the cohort root with a Grade column
    misnamed_seg_globs: tuple[str, ...] = ()

    @classmethod
    def of(cls, challenge: challenges.Challenge) -> "Layout":
        naming = challenge.naming
        return cls(name=challenge.name, patient_dir=naming.patient_dir, separator=naming.separator,
                   tokens=dict(naming.tokens), label_convention=challenge.label_convention,
                   grade_table=naming.grade_table, misnamed_seg_globs=naming.misnamed_seg_globs)

    @property
    def challenge(self) -> challenges.Challenge:
        return challenges.get(self.name)

    def is_patient_dir(self, name: str) -> bool:
        return re.fullmatch(self.patient_dir, name) is not None

    def expected_name(self, patient_id: str, channel: str, extension: str = ".nii.gz") -> str:
        if channel not in self.tokens:
            raise ValueError(f"{self.name} has no {channel!r} files; it ships {sorted(self.tokens)}")
        return f"{patient_id}{self.separator}{self.tokens[channel]}{extension}"

    def suffixes(self, channel: str) -> tuple[str, ...]:
        """Lower-case name endings of a channel's file, whatever the patient id (``_flair.nii.gz``...)."""
        if channel not in self.tokens:
            return ()
        return tuple(f"{self.separator}{self.tokens[channel]}{ext}".lower() for ext in NIFTI_EXTENSIONS)


class _Layouts(collections.abc.Mapping):
    """One layout per registry entry, in registry order (a live view: registered entries appear)."""

    def __getitem__(self, name: str) -> Layout:
        if name not in challenges.CHALLENGES:
            raise KeyError(name)
        return Layout.of(challenges.CHALLENGES[name])

    def __iter__(self):
        return iter(list(challenges.CHALLENGES))

    def __len__(self) -> int:
        return len(challenges.CHALLENGES)


LAYOUTS: collections.abc.Mapping = _Layouts()


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown layout {name!r}; known: {sorted(LAYOUTS)}") from None


@dataclasses.dataclass
class FileMatch:
    """Result of matching one patient folder: paths found and what is missing."""

    paths: dict[str, str]
    missing: dict[str, str]  # channel -> human-readable reason

    @property
    def complete(self) -> bool:
        return not self.missing


def match_patient_files(
    layout: Layout,
    patient_id: str,
    paths: list[str],
    channels: tuple[str, ...],
) -> FileMatch:
    """Pick the file of each channel among a patient folder's ``paths``.

    ``.nii.gz`` and ``.nii`` are both accepted (the Kaggle mirror of BraTS 2020
    is uncompressed).  A missing segmentation with a likely misnamed candidate
    (BraTS 2020 case 355 ships ``W39_1998.09.19_Segm.nii``) is reported with
    the rename that would fix it.
    """
    by_name = {posixpath.basename(p): p for p in paths}
    found: dict[str, str] = {}
    missing: dict[str, str] = {}
    for channel in channels:
        if channel not in layout.tokens:
            missing[channel] = f"{layout.name} has no {channel} files (it ships {', '.join(layout.tokens)})"
            continue
        names = [layout.expected_name(patient_id, channel, ext) for ext in NIFTI_EXTENSIONS]
        hit = next((by_name[n] for n in names if n in by_name), None)
        if hit is not None:
            found[channel] = hit
            continue
        reason = f"no file named {names[0]} or {names[1]}"
        if channel == SEGMENTATION:
            expected = set(found.values()) | {
                layout.expected_name(patient_id, c, e) for c in layout.tokens for e in NIFTI_EXTENSIONS
            }
            candidates = sorted(
                n for n in by_name
                if n not in expected
                and any(fnmatch.fnmatch(n, g) for g in layout.misnamed_seg_globs)
            )
            if candidates:
                reason += (
                    f"; found {', '.join(candidates)}, which looks like a misnamed segmentation:"
                    f" rename it to {names[1] if candidates[0].endswith('.nii') else names[0]}"
                    " to include this patient"
                )
        missing[channel] = reason
    return FileMatch(paths=found, missing=missing)


def match_any_layout(
    patient_id: str,
    paths: list[str],
    channels: tuple[str, ...],
    preferred: str | None = None,
) -> tuple[Layout | None, FileMatch]:
    """Match a folder of unknown release: the preferred layout first, then the others.

    Prediction and the web app accept a patient from any release (and files
    renamed by hand, as long as each ends in ``<separator><token>.nii[.gz]``),
    so a model trained on BraTS 2020 can segment a BraTS 2023 case.  Returns
    the first layout that finds every channel, or ``(None, <preferred's match>)``
    whose ``missing`` says what is absent.
    """
    order = ([preferred] if preferred in LAYOUTS else []) + [n for n in LAYOUTS if n != preferred]
    first_match = None
    for name in order:
        layout = LAYOUTS[name]
        match = match_patient_files(layout, patient_id, paths, channels)
        if match.complete:
            return layout, match
        loose = _match_by_token(layout, paths, channels)
        if loose is not None:
            return layout, loose
        first_match = first_match or match
    return None, first_match


def _match_by_token(layout: Layout, paths: list[str], channels: tuple[str, ...]) -> FileMatch | None:
    """Each channel's single file whose name ends with the layout's token, or None."""
    found = {}
    for channel in channels:
        hits = [p for p in paths if posixpath.basename(p).lower().endswith(layout.suffixes(channel))]
        if len(hits) != 1:
            return None
        found[channel] = hits[0]
    return FileMatch(paths=found, missing={})
