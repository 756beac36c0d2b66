"""Where a prediction's patients are: folders from ``--input`` values, and each folder's modality files.

The first step of a prediction, before any model runs: a folder that is
missing or lacks a modality is reported by name here, not deep inside the
preprocessing.
"""

from __future__ import annotations

import os
import posixpath
from typing import TYPE_CHECKING

from preprocessing.discovery import PatientSource
from preprocessing.patient import PatientError
from shared import challenges, detection, layouts, storage

if TYPE_CHECKING:
    from serving.predictor import Predictor


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
                raise FileNotFoundError(f"--input: {storage.folder_problem(pattern) or f'{pattern} is not a folder'}")
            folders.add(pattern.rstrip("/"))
    return sorted(folders)


def _glob_folders(pattern: str) -> list[str]:
    """Folders matching a glob (local), or prefixes holding files (object stores)."""
    if storage.is_remote(pattern):
        return sorted({posixpath.dirname(e.path) for e in storage.match(storage.join(pattern, "*"))})
    import glob

    return [p for p in sorted(glob.glob(pattern)) if os.path.isdir(p)]


def source_from_folder(folder: str, predictor: Predictor,
                       allow_other_challenge: bool = False) -> tuple[PatientSource, str]:
    """The patient's modality files (any BraTS release naming) and the numbering to write its segmentation in.

    Files named for a challenge whose labels mean other tissues than the
    model's (a PED case for a GLI model) are refused naming both numberings,
    unless ``allow_other_challenge``: the model's numbering is then written.
    """
    patient_id = posixpath.basename(folder.rstrip("/"))
    if not storage.is_dir(folder):
        raise PatientError("discover", "not a folder", folder)
    paths = storage.list_dir(folder)
    layout, match = layouts.match_any_layout(patient_id, paths, predictor.channels, predictor.layout)
    if layout is None:
        channel, reason = sorted(match.missing.items())[0]
        raise PatientError("discover", f"missing modality {channel}: {reason}", folder)
    if not check_named_challenge(paths, predictor.challenge, folder, allow_other_challenge):
        return PatientSource(patient_id, "unknown", match.paths, {}), predictor.challenge.label_convention
    return (PatientSource(patient_id, "unknown", match.paths, {}),
            challenges.output_convention(predictor.challenge, layout.label_convention))


def check_named_challenge(paths: list[str], model: challenges.Challenge, folder: str, allow: bool) -> bool:
    """Whether the files' names allow the model's classes; False only when ``allow`` let files named for a
    challenge numbered otherwise through (their segmentation is then written in the model's numbering)."""
    found = detection.by_names(paths)
    if found.how != "names" or not found.candidates:
        return True
    if any(challenges.same_classes(challenges.get(n).label_convention, model.label_convention)
           for n in found.candidates):
        return True
    if allow:
        return False
    named = " or ".join(f"{challenges.get(n).title} (labels {detection.numbering(n)})" for n in found.candidates)
    raise PatientError("discover", f"files named as {named}, but the model was trained on {model.title} (labels "
                       f"{detection.numbering(model.name)}); pass --allow_other_challenge to segment them anyway "
                       "in the model's numbering", folder)
