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
from shared import challenges, layouts, storage
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
    cohort: str = ""  # which input folder it came from, in a dataset built from several
    label_convention: str = ""  # numbering of its segmentation ("": the config's challenge's)


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


def named_otherwise(input_dir: str) -> str:
    """'; its folders are named as X: pass --config=configs/preprocess/challenge.py:X' where some other
    challenge's naming fits the folders (GLI 2023/2024 share names: both are listed), else ''."""
    names = {posixpath.basename(posixpath.dirname(e.path)) for e in storage.match(join(input_dir, "*", "*"))}
    fits = [layout.name for layout in layouts.LAYOUTS.values() if any(layout.is_patient_dir(n) for n in names)]
    if not fits:
        return ""
    flags = " or ".join(f"--config=configs/preprocess/challenge.py:{n}" for n in fits)
    return f"; its folders are named as {', '.join(fits)}: pass {flags}"


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
        if problem := storage.folder_problem(input_dir):
            raise FileNotFoundError(f"--input: no patient folders to read: {problem}")
        raise FileNotFoundError(
            f"no patient folders matching {layout.patient_dir!r} under {input_dir} (layout {layout.name})"
            + named_otherwise(input_dir)
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
            cohort=layout.name,
            label_convention=layout.label_convention,
        ))
    return Cohort(patients=patients, failures=failures, checksums=checksums)


def layout_of_folder(input_dir: str, wanted: layouts.Layout) -> layouts.Layout:
    """The layout naming the patient folders under ``input_dir``.

    The config's own first; otherwise a challenge whose labels mean the same
    classes (a GoAT-style dataset built from GLI, SSA and MEN folders, or a
    2020 folder in a 2023 dataset).  Labels that mean other tissues are never
    mixed: GLI 2024's RC is not a 2023 label.
    """
    candidates = [wanted] + [
        layout for layout in layouts.LAYOUTS.values()
        if layout.name != wanted.name and challenges.same_classes(layout.label_convention, wanted.label_convention)
    ]
    for layout in candidates:
        if list_patient_folders(input_dir, layout):
            return layout
    if problem := storage.folder_problem(input_dir):
        raise FileNotFoundError(f"--input: no patient folders to read: {problem}")
    raise FileNotFoundError(
        f"no patient folders under {input_dir} named like {wanted.name} ({wanted.patient_dir!r}) or like a "
        f"challenge with the same labels ({', '.join(c.name for c in candidates[1:]) or 'none'})"
    )


def discover_cohorts(input_dirs: list[str], layout: layouts.Layout, modalities: tuple[str, ...],
                     require_seg: bool = True, progress=None) -> Cohort:
    """Patients of one or several input folders, each patient tagged with its folder's cohort.

    A cohort is named after the challenge whose naming its folder follows
    (``brats2023_gli``, ``brats2024_ssa``...), with ``#2``, ``#3`` for a
    challenge given twice, so the name does not depend on where the folder
    lives.  The same patient id in two folders is refused: records and
    splits are keyed by it.
    """
    merged = Cohort([], [], {})
    seen: dict[str, str] = {}
    names: collections.Counter = collections.Counter()
    for input_dir in input_dirs:
        found = layout_of_folder(input_dir, layout) if len(input_dirs) > 1 else layout
        names[found.name] += 1
        name = found.name if names[found.name] == 1 else f"{found.name}#{names[found.name]}"
        part = discover(input_dir, found, modalities, require_seg, progress=progress)
        for patient in part.patients:
            patient.cohort = name
        for pid in part.checksums:
            if pid in seen:
                raise ValueError(f"patient {pid} is in both {seen[pid]} and {input_dir}; give each patient once")
            seen[pid] = input_dir
        merged.patients.extend(part.patients)
        merged.failures.extend(part.failures)
        merged.checksums.update(part.checksums)
    merged.patients.sort(key=lambda p: p.patient_id)
    return merged
