"""Score segmentations with the BraTS metrics of ``shared.metrics``.

Two sources of predictions, one report:

* a trained model on a split of a dataset version: each record's cropped image
  goes through the same sliding window as prediction, and is compared with the
  record's own labels (the crop holds the whole tumour, so Dice and HD95 are
  those of the full grid);
* a folder of NIfTI segmentations from any tool against BraTS ground-truth
  folders of any release, so other models are compared on the same footing.

Both write ``scores.csv`` (one row per patient), ``summary.json`` (statistics,
best and worst patient per region, the conventions used) and
``errors.jsonl`` for patients that could not be scored.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import posixpath
import time
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from preprocessing.discovery import list_patient_folders
from shared import failures as failures_lib
from shared.failures import Failure
from shared import challenges, labels, layouts, manifest as manifest_lib, metrics, schema, volume_ops
from shared.nifti_io import load_array, parse_nifti
from shared import storage
from shared.storage import read_bytes, write_bytes
from serving import inference, prediction

SCORES, SUMMARY, ERRORS = "scores.csv", "summary.json", failures_lib.ERRORS_NAME
PRED_NAMES = ("{pid}.nii.gz", "{pid}.nii", "{pid}_seg.nii.gz", "{pid}_seg.nii", "{pid}/{pid}_seg.nii.gz",
              "{pid}/{pid}.nii.gz", "{pid}_pred.nii.gz")


@dataclasses.dataclass
class Report:
    rows: list[dict]
    summary: dict
    failures: list[dict]
    output_dir: str


def _spacing(affine) -> tuple[float, float, float]:
    return volume_ops.voxel_spacing(np.asarray(affine))


def records_of_split(data_dir: str, split: str) -> Iterator[schema.PatientRecord]:
    """Decoded records of one split, in shard order."""
    found = manifest_lib.read_manifest(data_dir)
    if split not in found["splits"]:
        raise ValueError(f"{data_dir} has no split {split!r}; it has {sorted(found['splits'])}")
    compression = found["record"].get("compression", "GZIP")
    files = manifest_lib.shard_paths(data_dir, found, split)
    for raw in tf.data.TFRecordDataset(files, compression_type="" if compression == "NONE" else compression):
        yield schema.decode(raw.numpy())


def score_model(predictor: prediction.Predictor, data_dir: str, split: str, tta: str = "none",
                overlap: float = 0.5, echo: Callable[[str], None] = print) -> tuple[list[dict], list[dict]]:
    """Per-patient scores of a model on a dataset split (labels taken from the records)."""
    rows, failures = [], []
    predict = predictor.predict_fn()
    total = len(manifest_lib.read_manifest(data_dir)["splits"].get(split, {}).get("patients", []))
    for n, record in enumerate(records_of_split(data_dir, split), 1):
        if record.mask.shape[-1] == 0:
            failures.append(Failure(record.patient_id, "evaluate", "", "record has no labels").to_json())
            continue
        start = time.perf_counter()
        probs = inference.sliding_window(predict, record.image.astype(np.float32), predictor.window,
                                         overlap=overlap, tta=tta)
        pred = np.argmax(probs, axis=-1).astype(np.uint8)
        truth = np.argmax(record.mask, axis=-1).astype(np.uint8)
        row = {"patient": record.patient_id,
               **metrics.score_patient(pred, truth, predictor.challenge, _spacing(record.affine))}
        rows.append(row)
        echo(f"  [{n}/{total}] {record.patient_id}: {_dice_line(row, predictor.challenge)} "
             f"({time.perf_counter() - start:.1f} s)")
    return rows, failures


def _dice_line(row: dict, challenge) -> str:
    return "Dice " + " ".join(f"{r} {row[f'dice_{r}']:.3f}" for r in challenge.regions)


def find_prediction(pred_dir: str, patient_id: str) -> str | None:
    """The prediction file of a patient, under any of the usual namings."""
    for pattern in PRED_NAMES:
        path = posixpath.join(pred_dir, pattern.format(pid=patient_id))
        if storage.exists(path):
            return path
    return None


def _truth_folders(truth_dir: str, layout_name: str | None) -> tuple[layouts.Layout, dict[str, list[str]]]:
    """Patient folders under ``truth_dir``, with the layout that names them."""
    candidates = [layouts.get_layout(layout_name)] if layout_name else list(layouts.LAYOUTS.values())
    for layout in candidates:
        folders = list_patient_folders(truth_dir, layout)
        if folders:
            return layout, folders
    raise FileNotFoundError(f"no BraTS patient folders under {truth_dir} "
                            f"(tried layouts {', '.join(l.name for l in candidates)})")


def _load_labels(path: str, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Classes and affine of a segmentation file in ``convention``; ValueError naming the file."""
    name = posixpath.basename(path)
    image = parse_nifti(read_bytes(path), name)
    stored = load_array(image, name)
    if stored.ndim != 3:
        raise ValueError(f"{name}: expected a 3-D segmentation, got shape {stored.shape}")
    try:
        return labels.to_classes(np.rint(stored), convention), image.affine
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def score_folders(pred_dir: str, truth_dir: str, layout_name: str | None = None, pred_convention: str | None = None,
                  echo: Callable[[str], None] = print) -> tuple[list[dict], list[dict], "challenges.Challenge"]:
    """Per-patient scores of NIfTI predictions against BraTS ground-truth folders, and the truth's challenge."""
    layout, folders = _truth_folders(truth_dir, layout_name)
    challenge = layout.challenge
    pred_convention = pred_convention or layout.label_convention
    if not challenges.same_classes(pred_convention, layout.label_convention):
        raise ValueError(f"predictions numbered {pred_convention!r} cannot be scored against {challenge.name} "
                         f"truth (numbered {layout.label_convention!r}): the labels mean different tissues")
    rows, failures = [], []
    for n, (pid, paths) in enumerate(folders.items(), 1):
        match = layouts.match_patient_files(layout, pid, paths, (layouts.SEGMENTATION,))
        pred_path = find_prediction(pred_dir, pid)
        if not match.complete:
            failures.append(Failure(pid, "truth", layout.expected_name(pid, "seg"),
                                    match.missing[layouts.SEGMENTATION]).to_json())
            continue
        if pred_path is None:
            failures.append(Failure(pid, "prediction", f"{pid}.nii.gz",
                                    f"no prediction in {pred_dir} (looked for {', '.join(PRED_NAMES)})").to_json())
            continue
        try:
            truth, affine = _load_labels(match.paths[layouts.SEGMENTATION], layout.label_convention)
            pred, _ = _load_labels(pred_path, pred_convention)
            if pred.shape != truth.shape:
                raise ValueError(f"{posixpath.basename(pred_path)}: shape {pred.shape} differs from the ground "
                                 f"truth's {truth.shape}")
        except ValueError as exc:
            failures.append(Failure(pid, "load", posixpath.basename(pred_path), str(exc)).to_json())
            continue
        row = {"patient": pid, **metrics.score_patient(pred, truth, challenge, _spacing(affine))}
        rows.append(row)
        echo(f"  [{n}/{len(folders)}] {pid}: {_dice_line(row, challenge)}")
    return rows, failures, challenge


def scores_csv(rows: list[dict]) -> str:
    columns = ["patient"] + [k for k in rows[0] if k != "patient"] if rows else ["patient"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return out.getvalue()


def write_report(rows: list[dict], failures: list[dict], output_dir: str, about: dict, challenge) -> Report:
    """scores.csv, summary.json (with ``about``: what was scored against what) and errors.jsonl."""
    summary = (metrics.summarize(rows, tuple(challenge.regions)) if rows
               else {"convention": metrics.CONVENTION, "n": 0})
    summary.update(about=about, failed=len(failures), challenge=challenge.name)
    write_bytes(posixpath.join(output_dir, SCORES), scores_csv(rows).encode())
    write_bytes(posixpath.join(output_dir, SUMMARY), (json.dumps(summary, indent=2, default=str) + "\n").encode())
    failures_lib.write_errors(output_dir, failures)
    return Report(rows, summary, failures, output_dir)


def format_report(report: Report) -> str:
    lines = [metrics.format_table(report.summary) if report.rows else "No patient could be scored."]
    if report.failures:
        lines.append(f"{len(report.failures)} patient(s) not scored:")
        lines += [failures_lib.format_line(f) for f in report.failures]
    lines.append(f"Per-patient scores: {posixpath.join(report.output_dir, SCORES)}; "
                 f"summary: {posixpath.join(report.output_dir, SUMMARY)}")
    return "\n".join(lines)
