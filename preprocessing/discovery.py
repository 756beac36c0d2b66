"""Finding the patients of a cohort, their grades and their files' checksums.

Runs in the launcher, before the pipeline: the checksums of every input file
(``preprocessing.checksums``) enter the dataset's version id, which names the
output directory.  Evaluation and prediction use the same folder listing.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import io
import posixpath

from preprocessing import checksums as checksums_lib
from shared import layouts, storage
from shared.failures import Failure
from shared.storage import join, read_bytes

UNKNOWN_GRADE = "unknown"


@dataclasses.dataclass
class PatientSource:
    """One patient as the pipeline receives it (pickled into a Beam element)."""

    patient_id: str
    grade: str
    files: dict[str, str]  # channel (modality or "seg") -> path
    checksums: dict[str, str]  # path -> its checksum at launch ("md5:<hex>"); empty: not checked
    split: str = ""


@dataclasses.dataclass
class Cohort:
    patients: list[PatientSource]  # complete ones, sorted by id
    failures: list[Failure]  # folders that cannot be processed at all
    checksums: dict[str, dict[str, str]]  # patient -> file basename -> checksum


def list_patient_folders(input_dir: str, layout: layouts.Layout) -> dict[str, list[str]]:
    """Patient id -> file paths, for every sub-folder named like a patient."""
    folders: dict[str, list[str]] = collections.defaultdict(list)
    for entry in storage.match(join(input_dir, "*", "*")):
        folder = posixpath.basename(posixpath.dirname(entry.path))
        if layout.is_patient_dir(folder):
            folders[folder].append(entry.path)
    return {k: sorted(v) for k, v in sorted(folders.items())}


def read_grades(input_dir: str, layout: layouts.Layout) -> dict[str, str]:
    """Patient id -> grade (HGG/LGG) from the release's table, when it has one."""
    if not layout.grade_table:
        return {}
    path = join(input_dir, layout.grade_table)
    if not storage.exists(path):
        return {}
    rows = csv.DictReader(io.StringIO(read_bytes(path).decode("utf-8-sig")))
    grades = {}
    for row in rows:
        pid = (row.get("BraTS_2020_subject_ID") or "").strip()
        if pid:
            grades[pid] = (row.get("Grade") or UNKNOWN_GRADE).strip() or UNKNOWN_GRADE
    return grades


def checksum_files(paths: list[str], known: dict[str, str] | None = None, threads: int = 8,
                   progress=None) -> dict[str, str]:
    """The checksum of each path: from ``known`` (the object store's), else read in parallel threads."""
    known = known or {}
    result: dict[str, str] = {p: known[p] for p in paths if p in known}
    todo = [p for p in paths if p not in result]
    if progress and result:
        progress(len(result), len(paths))
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        futures = {pool.submit(checksums_lib.of_file, p): p for p in todo}
        for future in concurrent.futures.as_completed(futures):
            result[futures[future]] = future.result()
            if progress:
                progress(len(result), len(paths))
    return result


def discover(input_dir: str, layout: layouts.Layout, modalities: tuple[str, ...],
             require_seg: bool = True, progress=None) -> Cohort:
    """Every patient folder under ``input_dir``, matched against the layout."""
    folders = list_patient_folders(input_dir, layout)
    if not folders:
        raise FileNotFoundError(
            f"no patient folders matching {layout.patient_dir!r} under {input_dir} (layout {layout.name})"
        )
    grades = read_grades(input_dir, layout)
    channels = tuple(modalities) + ((layouts.SEGMENTATION,) if require_seg else ())
    sums = checksum_files([p for paths in folders.values() for p in paths], checksums_lib.stored(input_dir),
                          progress=progress)
    patients, failures, checksums = [], [], {}
    for pid, paths in folders.items():
        checksums[pid] = {posixpath.basename(p): sums[p] for p in paths}
        match = layouts.match_patient_files(layout, pid, paths, channels)
        if not match.complete:
            for channel, reason in sorted(match.missing.items()):
                failures.append(Failure(pid, "discover", layout.expected_name(pid, channel), reason))
            continue
        patients.append(PatientSource(
            patient_id=pid,
            grade=grades.get(pid, UNKNOWN_GRADE),
            files=match.paths,
            checksums={p: sums[p] for p in match.paths.values()},
        ))
    return Cohort(patients=patients, failures=failures, checksums=checksums)
