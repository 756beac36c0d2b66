"""Failure reports: a patient left out of a job, and why.

Preprocessing, prediction and evaluation all leave their bad patients in an
``errors.jsonl`` beside their output and print them in their summary; this
module is the one place that defines the line and writes the file, so every
report reads the same (patient, stage, file, reason) and sorts the same way.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath

from shared import storage

ERRORS_NAME = "errors.jsonl"


@dataclasses.dataclass(frozen=True)
class Failure:
    """One patient that could not be processed: which stage, which file, why."""

    patient: str
    stage: str
    file: str
    reason: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def from_exception(patient: str, exc: Exception, default_stage: str) -> dict:
    """A failure line from an exception that carries ``stage``/``file``/``reason`` (PatientError), or any other."""
    stage = getattr(exc, "stage", None)
    if stage:
        file = getattr(exc, "file", "") or ""
        return Failure(patient, stage, posixpath.basename(file) if file else "", exc.reason).to_json()
    return Failure(patient, default_stage, "", f"{type(exc).__name__}: {exc}").to_json()


def sort_key(failure: dict) -> tuple:
    return failure["patient"], failure["stage"], failure["file"]


def errors_jsonl(failures: list[dict]) -> bytes:
    """The file's bytes: one canonical JSON object per line, sorted by patient, stage, file."""
    return "".join(json.dumps(f, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n"
                   for f in sorted(failures, key=sort_key)).encode()


def write_errors(folder: str, failures: list[dict]) -> str:
    """Write ``<folder>/errors.jsonl`` (empty when nothing failed); returns its path."""
    path = storage.join(folder, ERRORS_NAME)
    storage.write_bytes(path, errors_jsonl(failures))
    return path


def format_line(failure: dict) -> str:
    """``    <patient> [<stage>] <file>: <reason>`` for a printed summary."""
    return f"    {failure['patient']} [{failure['stage']}] {failure['file']}: {failure['reason']}"


def read_errors(folder: str) -> list[dict]:
    path = storage.join(folder, ERRORS_NAME)
    if not storage.exists(path):
        return []
    return [json.loads(line) for line in storage.read_bytes(path).decode().splitlines() if line.strip()]
