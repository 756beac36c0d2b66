"""Score segmentations with the BraTS metrics of ``shared.metrics``.

Two sources of predictions, one report:

* a trained model on a split of a dataset version, each patient predicted from
  its raw scans as ``serving.predict`` does and scored in its own (source)
  space against its ground-truth file, exactly as the two steps would
  (:func:`score_model_in_source_space`); or, faster and without the raw scans,
  each record's cropped image against the record's labels
  (:func:`score_model`: tumour outside the crop box is not seen);
* a folder of NIfTI segmentations from any tool against BraTS ground-truth
  folders of any release, so other models are compared on the same footing.

Both write ``scores.csv`` (one row per patient: whole-region scores, then the
lesion-wise ones as ``lesion_<metric>_<region>``), ``lesions.csv`` (one row per
lesion: patient, region, lesion, kind, volume, matched, Dice, HD95, NSD),
``summary.json`` (statistics, best and worst patient per region, the scheme and
conventions used) and ``errors.jsonl`` for patients that could not be scored.
The scheme (:mod:`evaluation.schemes`) is the challenge's own unless one is named.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import posixpath
import time
from typing import Callable, Iterator

import numpy as np

from preprocessing.discovery import list_patient_folders
from shared import failures as failures_lib
from shared.failures import Failure
from evaluation import gli_release, lesions, official, parser_csv, schemes
from shared import challenges, geometry, labels, layouts, manifest as manifest_lib, metrics, schema, volume_ops
from shared.nifti_io import load_array, read_file
from shared import storage
from shared.storage import write_bytes
from serving import inference, prediction, predictor as predictor_lib
from serving.inputs import source_from_folder

SCORES, LESIONS, SUMMARY, ERRORS = "scores.csv", "lesions.csv", "summary.json", failures_lib.ERRORS_NAME
OFFICIAL = "official_scores.csv"  # brats-parse-metrics columns (2026 schemes)
# Key under which a patient's row carries its per-lesion records until write_report splits them off.
LESIONS_KEY = "lesions"
PRED_NAMES = ("{pid}.nii.gz", "{pid}.nii", "{pid}_seg.nii.gz", "{pid}_seg.nii", "{pid}/{pid}_seg.nii.gz",
              "{pid}/{pid}.nii.gz", "{pid}_pred.nii.gz")


@dataclasses.dataclass
class Report:
    rows: list[dict]
    summary: dict
    failures: list[dict]
    output_dir: str


def records_of_split(data_dir: str, split: str, patients=None) -> Iterator[schema.PatientRecord]:
    """Decoded records of one split, in shard order; only those of ``patients`` when given (a fold)."""
    import tensorflow as tf  # here only: scoring prediction folders (--pred_dir) needs no TensorFlow

    found = manifest_lib.read_manifest(data_dir)
    if split not in found["splits"]:
        raise ValueError(f"{data_dir} has no split {split!r}; it has {sorted(found['splits'])}")
    compression = found["record"].get("compression", "GZIP")
    files = manifest_lib.shard_paths(data_dir, found, split)
    wanted = None if patients is None else set(patients)
    for raw in tf.data.TFRecordDataset(files, compression_type="" if compression == "NONE" else compression):
        record = schema.decode(raw.numpy())
        if wanted is None or record.patient_id in wanted:
            yield record


def score_patient(patient: str, pred: np.ndarray, truth: np.ndarray, challenge: "challenges.Challenge",
                  spacing, scheme: schemes.Scheme) -> dict:
    """One patient's row: whole-region scores, lesion-wise columns and (under LESIONS_KEY) its lesions.

    ``spacing`` is the file's header zooms (array axis order).  Under the 2026
    schemes the whole-region Dice/HD95 follow the official rules (with an
    ``nsd_<R>`` column) and the lesions get the spacing the scheme says
    (:mod:`evaluation.official`: reversed as the leaderboard reads files, or as is).
    """
    lesion_spacing = official.lesion_spacing(spacing, scheme.lesion_spacing)
    found = lesions.score_lesions(pred, truth, challenge, lesion_spacing, scheme)
    panoptica = scheme.whole_region == "panoptica"  # then Dice/HD95 (and NSD) come from evaluation.official
    row = metrics.score_patient(pred, truth, challenge, spacing,
                                hd95_reduction=None if panoptica else scheme.hd95_reduction)
    if panoptica:
        row.update(official.whole_region_row(pred, truth, metrics.structures(challenge), spacing,
                                             scheme.whole_region_spacing))
    return {"patient": patient, **row, **found.row(), LESIONS_KEY: found.lesion_rows(patient)}


def score_model(predictor: predictor_lib.Predictor, data_dir: str, split: str, tta: str = "none",
                overlap: float = 0.5, echo: Callable[[str], None] = print,
                scheme: str | None = None, patients=None,
                keep: Callable[[schema.PatientRecord, np.ndarray, np.ndarray], None] | None = None,
                ) -> tuple[list[dict], list[dict]]:
    """Per-patient scores of a model (or ensemble) on a dataset split, on the records' cropped grid.

    Cheap (no N4, no raw scans), so cross-validation and the choice of
    inference window use it; tumour outside the crop box is not counted
    (``evaluate --model`` uses :func:`score_model_in_source_space`).

    ``scheme`` names a :mod:`evaluation.schemes` entry (default: the model's challenge's own).
    ``patients``: only these (a cross-validation fold's validation patients).
    ``keep(record, predicted classes, true classes)`` is called for each
    scored patient (cross-validation keeps them to choose post-processing on).
    The predictor's post-processing rules, if any, are applied before scoring.
    """
    chosen = schemes.resolve(predictor.challenge, scheme)
    rows, failures = [], []
    predict = predictor.predict_fn()
    total = len(manifest_lib.read_manifest(data_dir)["splits"].get(split, {}).get("patients", []))
    total = len(set(patients)) if patients is not None else total
    for n, record in enumerate(records_of_split(data_dir, split, patients), 1):
        if record.mask.shape[-1] == 0:
            failures.append(Failure(record.patient_id, "evaluate", "", "record has no labels").to_json())
            continue
        start = time.perf_counter()
        probs = inference.sliding_window(predict, record.image.astype(np.float32), predictor.window,
                                         overlap=overlap, tta=tta)
        pred = prediction.classes_of(predictor, probs)
        truth = np.argmax(record.mask, axis=-1).astype(np.uint8)
        if keep is not None:
            keep(record, pred, truth)
        row = score_patient(record.patient_id, pred, truth, predictor.challenge, record.spacing, chosen)
        rows.append(row)
        echo(f"  [{n}/{total}] {record.patient_id}: {_dice_line(row, predictor.challenge)} "
             f"({time.perf_counter() - start:.1f} s)")
    return rows, failures


def default_output(models: list[str], split: str) -> str:
    """Where ``evaluate --model`` reports go: beside one model file, inside one folder, else ./eval_<split>."""
    if len(models) != 1:
        return f"eval_{split}"
    model = models[0]
    if storage.is_dir(model):
        folder = model
    else:
        folder = posixpath.dirname(model) if storage.is_remote(model) else os.path.dirname(os.path.abspath(model))
    return posixpath.join(folder, f"eval_{split}")


def _dice_line(row: dict, challenge) -> str:
    return "Dice " + " ".join(f"{r} {row[f'dice_{r}']:.3f}" for r in challenge.regions)


def find_prediction(pred_dir: str, patient_id: str) -> str | None:
    """The prediction file of a patient, under any of the usual namings, else as the official
    ``brats-evaluate`` pairs it (a name ending in the patient's ``NNNNN-NNN.nii.gz``)."""
    for pattern in PRED_NAMES:
        path = posixpath.join(pred_dir, pattern.format(pid=patient_id))
        if storage.exists(path):
            return path
    wanted = official.OFFICIAL_ID.search(patient_id)
    if wanted and storage.is_dir(pred_dir):
        suffix = f"{wanted.group(1)}.nii.gz"
        return next((p for p in storage.list_dir(pred_dir) if posixpath.basename(p).endswith(suffix)), None)
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


def _load_labels(path: str, convention: str,
                 layout_name: str | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Classes, affine and header zooms (the spacing every reference tool uses, not the affine's
    column norms) of a segmentation file in ``convention``; ValueError naming the file.  With
    ``layout_name`` (a truth file), :class:`evaluation.gli_release.ReleaseMismatch` when its labels
    belong to the other GLI release."""
    name = posixpath.basename(path)
    image, _ = read_file(path)  # bounded: header and size checked before any voxel is inflated
    stored = load_array(image, name)
    if stored.ndim != 3:
        raise ValueError(f"{name}: expected a 3-D segmentation, got shape {stored.shape}")
    stored = np.rint(stored)
    if layout_name:
        gli_release.check(stored, layout_name, name)
    try:
        return labels.to_classes(stored, convention), image.affine, volume_ops.header_spacing(image)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _truth_path(layout: layouts.Layout, pid: str, paths: list[str]) -> tuple[str | None, dict | None]:
    """The patient's ground-truth file, or the failure saying it is missing."""
    match = layouts.match_patient_files(layout, pid, paths, (layouts.SEGMENTATION,))
    if not match.complete:
        return None, Failure(pid, "truth", layout.expected_name(pid, "seg"),
                             match.missing[layouts.SEGMENTATION]).to_json()
    return match.paths[layouts.SEGMENTATION], None


def _score_against_truth(pid: str, pred: np.ndarray, pred_affine, pred_name: str, truth_path: str,
                         layout: layouts.Layout, chosen: schemes.Scheme) -> dict:
    """One patient's row: predicted classes (truth's numbering) against the truth file, on the truth's grid.

    Both ``evaluate --pred_dir`` and ``evaluate --model`` score here, so the
    two give the same numbers for the same segmentation.  A prediction in
    another orientation is turned into the truth's; another grid raises
    :class:`shared.geometry.GeometryError` naming the file; a truth that
    cannot be read, ValueError.
    """
    truth, affine, zooms = _load_labels(truth_path, layout.label_convention, layout.name)
    pred = geometry.align_to(pred, pred_affine, affine, truth.shape, what=pred_name)
    return score_patient(pid, pred, truth, layout.challenge, zooms, chosen)


def _check_numbering(pred_convention: str, layout: layouts.Layout) -> None:
    if not challenges.same_classes(pred_convention, layout.label_convention):
        raise ValueError(f"predictions numbered {pred_convention!r} cannot be scored against "
                         f"{layout.challenge.name} truth (numbered {layout.label_convention!r}): the labels mean "
                         "different tissues")


def _score_cohort(pred_dir, layout, folders, pred_convention, chosen, echo, pred_paths, refuse_sibling: bool):
    """Rows and failures of every patient under ``layout``.  A file whose labels show the other GLI release
    fails its patient when ``refuse_sibling`` (the release was named), else ReleaseMismatch propagates
    (see score_folders)."""
    rows, failures = [], []
    for n, (pid, paths) in enumerate(folders.items(), 1):
        truth_path, missing = _truth_path(layout, pid, paths)
        pred_path = find_prediction(pred_dir, pid)
        if missing:
            failures.append(missing)
            continue
        if pred_path is None:
            failures.append(Failure(pid, "prediction", f"{pid}.nii.gz",
                                    f"no prediction in {pred_dir} (looked for {', '.join(PRED_NAMES)})").to_json())
            continue
        pred_paths.append(pred_path)
        try:
            same = pred_convention == layout.label_convention  # then its label 4 also means GLI 2024
            pred, pred_affine, _ = _load_labels(pred_path, pred_convention, layout.name if same else None)
            row = _score_against_truth(pid, pred, pred_affine, posixpath.basename(pred_path), truth_path, layout,
                                       chosen)
        except geometry.GeometryError as exc:
            failures.append(Failure(pid, "geometry", posixpath.basename(pred_path), str(exc)).to_json())
            continue
        except gli_release.ReleaseMismatch as exc:
            if not refuse_sibling:
                raise
            failures.append(Failure(pid, "load", "", str(exc)).to_json())
            continue
        except ValueError as exc:
            failures.append(Failure(pid, "load", posixpath.basename(pred_path), str(exc)).to_json())
            continue
        rows.append(row)
        echo(f"  [{n}/{len(folders)}] {pid}: {_dice_line(row, layout.challenge)}")
    return rows, failures


def score_folders(pred_dir: str, truth_dir: str, layout_name: str | None = None, pred_convention: str | None = None,
                  echo: Callable[[str], None] = print, scheme: str | None = None,
                  notes: list[str] | None = None) -> tuple[list[dict], list[dict], "challenges.Challenge"]:
    """Per-patient scores of NIfTI predictions against BraTS ground-truth folders, and the truth's challenge.

    Voxel spacing comes from the ground truth's header zooms, in the array's axis order.  A prediction
    stored in another orientation is turned into the truth's (exactly: flips and axis swaps); one on
    another grid or at another spacing is not scored (stage "geometry", naming both geometries).
    GLI 2023 and 2024 share their names: without ``layout_name`` a truth with label 4 (resection
    cavity) makes the whole cohort GLI 2024 (:mod:`evaluation.gli_release`); with it, that patient
    fails with the flag to pass.  ``notes`` (when given) collects lines the report should carry.
    """
    layout, folders = _truth_folders(truth_dir, layout_name)
    notes = [] if notes is None else notes
    while True:
        chosen = schemes.resolve(layout.challenge, scheme)
        convention = pred_convention or layout.label_convention
        _check_numbering(convention, layout)
        pred_paths: list[str] = []
        try:
            rows, failures = _score_cohort(pred_dir, layout, folders, convention, chosen, echo, pred_paths,
                                           refuse_sibling=bool(layout_name))
        except gli_release.ReleaseMismatch as exc:
            echo(f"  {exc}: scoring the cohort as {exc.sibling}")
            notes.append(f"challenge {exc.sibling} detected from the labels (label 4, resection cavity)")
            layout = layouts.get_layout(exc.sibling)
            continue
        note = gli_release.assumed_note(layout.name, bool(layout_name))
        notes += [n for n in (note, official.name_note(pred_paths)) if n]
        break
    return rows, failures, layout.challenge


# ------------------------------------------------------- a model in source space ----

def cohort_folders(data_dir: str, inputs=None) -> list[str]:
    """The raw cohort folder(s) a dataset version was made from: ``inputs`` when given, else the
    folder(s) its ``run.json`` records (the manifest holds no paths, so it is the same wherever the
    cohort lies); FileNotFoundError says to pass ``--input`` when they are not reachable from here."""
    if inputs:
        folders, where = ([inputs] if isinstance(inputs, str) else list(inputs)), "--input"
    else:
        source = manifest_lib.read_run(data_dir).get("source")
        if not source:
            raise FileNotFoundError(f"{data_dir} does not record where its raw scans lay (no run.json): pass "
                                    "--input=<the cohort folder it was preprocessed from>")
        folders, where = ([source] if isinstance(source, str) else list(source)), f"{data_dir}/run.json"
    missing = [f for f in folders if not storage.is_dir(f)]
    if missing:
        raise FileNotFoundError(f"the raw cohort {', '.join(missing)} (from {where}) is not reachable from here: "
                                "pass --input=<the cohort folder the dataset was preprocessed from> (repeat it, "
                                "or separate with commas, for a multi-cohort dataset)")
    return folders


def _patients_in(folders: list[str], preferred: str) -> dict[str, tuple[layouts.Layout, list[str]]]:
    """Patient id -> (layout, files) over the cohort folders; each folder's naming detected, the model's first."""
    found: dict[str, tuple[layouts.Layout, list[str]]] = {}
    for folder in folders:
        try:
            layout, patients = _truth_folders(folder, preferred)
        except FileNotFoundError:
            layout, patients = _truth_folders(folder, None)
        for pid, paths in patients.items():
            found.setdefault(pid, (layout, paths))
    return found


def split_patients(data_dir: str, split: str, patients=None) -> list[str]:
    """The patients of a split (only those of ``patients`` when given: a fold), in manifest order."""
    found = manifest_lib.read_manifest(data_dir)
    if split not in found["splits"]:
        raise ValueError(f"{data_dir} has no split {split!r}; it has {sorted(found['splits'])}")
    wanted = None if patients is None else set(patients)
    return [p for p in found["splits"][split]["patients"] if wanted is None or p in wanted]


def score_model_in_source_space(predictor: predictor_lib.Predictor, data_dir: str, split: str, inputs: list[str],
                                tta: str = "none", overlap: float = 0.5, echo: Callable[[str], None] = print,
                                scheme: str | None = None, patients=None) -> tuple[list[dict], list[dict]]:
    """Per-patient scores of a model (or ensemble) on a split, each patient predicted from its raw scans.

    Each patient goes the way ``serving.predict`` takes it (raw NIfTI,
    the preprocessing core, sliding window, post-processing, back onto the
    source grid and into the truth's numbering) and is scored against its
    own ground-truth file the way ``evaluate --pred_dir`` scores, so this
    equals predict followed by ``evaluate --pred_dir``.  Tumour outside the
    crop box counts (as missed), which scoring the records' cropped grid
    (:func:`score_model`) cannot see.
    """
    cohort = _patients_in(inputs, predictor.layout)
    wanted = split_patients(data_dir, split, patients)
    rows, failures = [], []
    for n, pid in enumerate(wanted, 1):
        if pid not in cohort:
            failures.append(Failure(pid, "discover", "", f"no folder {pid} under {', '.join(inputs)}").to_json())
            continue
        layout, paths = cohort[pid]
        truth_path, missing = _truth_path(layout, pid, paths)
        if missing:
            failures.append(missing)
            continue
        start = time.perf_counter()
        try:
            source, convention = source_from_folder(posixpath.dirname(truth_path), predictor)
            _check_numbering(convention, layout)
            pred = prediction.predict_patient(predictor, source, convention, tta, overlap)
            # the labels as the written segmentation holds them, read back as --pred_dir reads them
            classes = labels.to_classes(pred.stored_labels, layout.label_convention)
            row = _score_against_truth(pid, classes, pred.affine, f"{pid}.nii.gz", truth_path, layout,
                                       schemes.resolve(layout.challenge, scheme))
        except prediction.PATIENT_INPUT_ERRORS as exc:  # a bad patient is reported; a bug stops the run
            failures.append(failures_lib.from_exception(pid, exc, "predict"))
            continue
        rows.append(row)
        echo(f"  [{n}/{len(wanted)}] {pid}: {_dice_line(row, layout.challenge)} "
             f"({time.perf_counter() - start:.1f} s)")
    return rows, failures


def _csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value):
    """6 significant digits; NaN (undefined: a region empty in both under brats2026) as an empty cell."""
    if isinstance(value, float):
        return "" if value != value else f"{value:.6g}"
    return value


def scores_csv(rows: list[dict]) -> str:
    """The per-patient CSV: every scalar column (per-lesion records go to lesions.csv)."""
    columns = (["patient"] + [k for k in rows[0] if k not in ("patient", LESIONS_KEY)]) if rows else ["patient"]
    return _csv(rows, columns)


def lesions_csv(rows: list[dict]) -> str:
    """The per-lesion CSV of every patient's rows (empty cells where a metric is undefined)."""
    records = [lesion for row in rows for lesion in row.get(LESIONS_KEY, ())]
    return _csv(records, list(lesions.LESION_COLUMNS))


def _lesion_regions(rows: list[dict], challenge) -> list[str]:
    return [r for r in challenge.regions if rows and f"lesion_dice_{r}" in rows[0]]


def _write_official(rows: list[dict], failures: list[dict], output_dir: str, challenge) -> str:
    """official_scores.csv: the parser's columns (``mets`` ones for the METS tasks); its path."""
    missing = [f["patient"] for f in failures if f.get("patient")]
    text = parser_csv.official_csv(rows, list(challenge.regions), missing, mets="_met" in challenge.name,
                                   lesions_key=LESIONS_KEY)
    path = posixpath.join(output_dir, OFFICIAL)
    write_bytes(path, text.encode())
    return path


def write_report(rows: list[dict], failures: list[dict], output_dir: str, about: dict, challenge,
                 scheme: str | schemes.Scheme | None = None, notes: list[str] | None = None) -> Report:
    """scores.csv, lesions.csv, summary.json (with ``about``: what was scored against what) and errors.jsonl;
    under the 2026 schemes also official_scores.csv (:mod:`evaluation.parser_csv`).

    ``scheme`` must be the one the rows were scored under (default: the challenge's own); ``notes``
    are lines the report carries (the challenge detected from labels, predictions the official tool
    would not find).
    """
    chosen = scheme if isinstance(scheme, schemes.Scheme) else schemes.resolve(challenge, scheme)
    prefix = official.CONVENTION if chosen.whole_region == "panoptica" else metrics.convention(chosen.hd95_reduction)
    sentence = prefix + " " + schemes.describe(chosen, challenge)
    summary = (metrics.summarize(rows, tuple(challenge.regions), convention_text=sentence) if rows
               else {"convention": sentence, "n": 0})
    summary.update(about=about, failed=len(failures), challenge=challenge.name, scheme=chosen.name,
                   hd95_reduction=chosen.hd95_reduction, lesion_hd95_reduction=chosen.lesion_hd95_reduction,
                   lesion_regions=_lesion_regions(rows, challenge), notes=list(notes or []))
    if chosen.lesion_method == "matched":
        summary["official_csv"] = _write_official(rows, failures, output_dir, challenge)
    write_bytes(posixpath.join(output_dir, SCORES), scores_csv(rows).encode())
    write_bytes(posixpath.join(output_dir, LESIONS), lesions_csv(rows).encode())
    write_bytes(posixpath.join(output_dir, SUMMARY), (json.dumps(summary, indent=2, default=str) + "\n").encode())
    failures_lib.write_errors(output_dir, failures)
    return Report(rows, summary, failures, output_dir)


def _format_failures(failures: list[dict], output_dir: str) -> list[str]:
    """Patients without a prediction in one line (scoring part of a cohort is normal), other failures one each."""
    unpredicted = [f["patient"] for f in failures if f["stage"] == "prediction"]
    others = [f for f in failures if f["stage"] != "prediction"]
    lines = []
    if unpredicted:
        shown = ", ".join(unpredicted[:3]) + (f" and {len(unpredicted) - 3} more" if len(unpredicted) > 3 else "")
        lines.append(f"{len(unpredicted)} patient(s) of the ground truth have no prediction and are left out of "
                     f"the means: {shown} (listed in {posixpath.join(output_dir, failures_lib.ERRORS_NAME)})")
    if others:
        lines.append(f"{len(others)} patient(s) not scored:")
        lines += [failures_lib.format_line(f) for f in others]
    return lines


def format_report(report: Report) -> str:
    """Whole-region table, lesion-wise table (when the scheme scores lesions), failures, and where the files are."""
    lines = [metrics.format_table(report.summary) if report.rows else "No patient could be scored."]
    lesion_regions = report.summary.get("lesion_regions") or []
    if report.rows and lesion_regions:
        scheme = schemes.get(report.summary["scheme"])
        lines += [f"Lesion-wise ({scheme.name}; per-patient scores, means over patients, counts summed):",
                  lesions.format_cohort_table(report.summary, lesion_regions, scheme)]
    lines += [f"Note: {note}" for note in report.summary.get("notes", ())]
    lines += _format_failures(report.failures, report.output_dir)
    lines.append(f"Per-patient scores: {posixpath.join(report.output_dir, SCORES)}; "
                 f"per-lesion: {posixpath.join(report.output_dir, LESIONS)}; "
                 f"summary: {posixpath.join(report.output_dir, SUMMARY)}"
                 + (f"; official parser's columns: {report.summary['official_csv']}"
                    if report.summary.get("official_csv") else ""))
    return "\n".join(lines)
