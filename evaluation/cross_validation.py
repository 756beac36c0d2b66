"""Cross-validation scoring: every fold's model on its own validation patients, pooled, and post-processing chosen.

The folds are trained by :mod:`trainer.cross_validation` (one ordinary run per
``fold_<k>/``).  :func:`summarize` scores every fold's model on its own
validation patients (the whole cropped volumes, sliding window as in
prediction, ``shared.metrics`` / :mod:`evaluation.scoring` scores), writes each
fold's report to ``fold_<k>/validation/`` with the predictions
(``<patient>.npz``: predicted and true classes), pools the per-patient rows
into ``cross_validation/`` (scores.csv with a ``fold`` column, summary.json
with the mean over folds of each fold's per-patient mean Dice and HD95 per
region), and chooses the post-processing that raises the mean validation Dice
(``postprocessing.json``, which prediction with this workdir then applies).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import posixpath
from typing import Callable

import numpy as np

from evaluation import scoring
from serving import predictor as predictor_lib
from shared import challenges, postprocessing, storage, trained_run
from shared.trained_run import TrainedRun


def fold_runs(workdir: str) -> tuple[dict[int, TrainedRun], int]:
    """The finished folds' runs by fold, and how many folds the dataset has.

    ValueError when the workdir holds no finished fold, or folds trained on
    different dataset versions.
    """
    models = trained_run.fold_models(workdir)
    if not models:
        raise ValueError(f"{workdir} holds no finished fold ({trained_run.FOLD_PREFIX}<k>/{trained_run.MODEL_FILE}): "
                         "train the folds first")
    runs, counts, versions = {}, set(), set()
    for path in models:
        run = TrainedRun.read(posixpath.dirname(path))
        if run.fold is None:
            raise ValueError(f"{run.run_dir} was not trained as a cross-validation fold "
                             f"(no fold in its {trained_run.LINEAGE_FILE})")
        runs[run.fold] = run
        counts.add(int(run.lineage.num_folds))
        versions.add(run.lineage.version_id)
    if len(versions) > 1 or len(counts) > 1:
        raise ValueError(f"the folds in {workdir} were trained on different datasets: versions {sorted(versions)}")
    return runs, counts.pop()


def missing_folds(workdir: str) -> list[int]:
    """Folds without a finished model (all of them for an empty workdir is not known: ValueError)."""
    runs, count = fold_runs(workdir)
    return [k for k in range(count) if k not in runs]


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def validate_fold(run: TrainedRun, fold: int, tta: str = "none", overlap: float = 0.5,
                  echo=print) -> tuple[list, list]:
    """Score a fold's model on its validation patients; keep the predictions for choosing post-processing."""
    predictor = predictor_lib.load_predictor(run.model_file, postprocessing="none")
    if predictor.data_dir is None:
        raise FileNotFoundError(f"the dataset of {run.run_dir} ({run.lineage.data_dir}) is not reachable from here")
    out = run.validation_dir
    _, patients = run.validation()

    def keep(record, pred, truth):
        storage.write_bytes(storage.join(out, f"{record.patient_id}.npz"),
                            _npz_bytes(prediction=pred.astype(np.uint8), truth=truth.astype(np.uint8)))

    echo(f"Fold {fold}: scoring {run.run_dir} on its {len(patients)} validation patient(s)")
    rows, failures = scoring.score_model(predictor, predictor.data_dir, "train", tta=tta, overlap=overlap,
                                            echo=echo, patients=patients, keep=keep)
    rows = [{"fold": fold, **row} for row in rows]
    scoring.write_report(rows, failures, out, {"model": run.run_dir, "fold": fold, "tta": tta}, predictor.challenge)
    return rows, failures


class _Cases:
    """The folds' validation (prediction, truth) pairs, read from their .npz files on each pass."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __iter__(self):
        for path in self.paths:
            with np.load(io.BytesIO(storage.read_bytes(path))) as f:
                yield f["prediction"], f["truth"]

    def __len__(self):
        return len(self.paths)


def _mean(values) -> float:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def fold_table(rows: list[dict], regions, folds) -> dict:
    """Per fold, the mean over its patients of Dice and HD95 per region; then mean and std over the folds."""
    columns = [f"{metric}_{r}" for metric in ("dice", "hd95") for r in regions]
    per_fold = {int(k): {c: _mean(row[c] for row in rows if row["fold"] == k and c in row) for c in columns}
                for k in folds}
    mean = {c: _mean(per_fold[k][c] for k in per_fold) for c in columns}
    std = {c: float(np.nanstd([per_fold[k][c] for k in per_fold])) for c in columns}
    return {"per_fold": per_fold, "mean_over_folds": mean, "std_over_folds": std, "columns": columns}


def format_fold_table(table: dict) -> str:
    columns = table["columns"]
    width = max(len(c) for c in columns) + 1
    lines = ["fold  " + "".join(c.rjust(width) for c in columns)]
    for k, values in sorted(table["per_fold"].items()):
        lines.append(f"{k:<6}" + "".join(f"{values[c]:.3f}".rjust(width) for c in columns))
    lines.append("mean  " + "".join(f"{table['mean_over_folds'][c]:.3f}".rjust(width) for c in columns))
    lines.append("std   " + "".join(f"{table['std_over_folds'][c]:.3f}".rjust(width) for c in columns))
    return "\n".join(lines)


@dataclasses.dataclass
class Summary:
    table: dict  # fold_table
    rows: list[dict]
    failures: list[dict]
    output_dir: str
    postprocessing: postprocessing.Choice | None


def summarize(workdir: str, tta: str = "none", overlap: float = 0.5, choose_postprocessing: bool = True,
              echo: Callable[[str], None] = print) -> Summary:
    """Score every fold on its validation patients, pool the table, choose post-processing (all folds needed)."""
    runs, count = fold_runs(workdir)
    missing = [k for k in range(count) if k not in runs]
    if missing:
        raise ValueError(f"{workdir}: fold(s) {missing} of {count} have no finished model yet; train them "
                         f"(python -m trainer.cross_validate ... --folds={','.join(map(str, missing))}) first")
    rows, failures = [], []
    for k in range(count):
        fold_rows, fold_failures = validate_fold(runs[k], k, tta, overlap, echo)
        rows += fold_rows
        failures += [{**f, "fold": k} for f in fold_failures]
    lineage = runs[0].lineage
    challenge = challenges.get(lineage.challenge)
    table = fold_table(rows, tuple(challenge.regions), range(count))
    out = storage.join(workdir, trained_run.CROSS_VALIDATION_DIR)
    about = {"workdir": workdir, "folds": count, "version_id": lineage.version_id, "data_dir": lineage.data_dir,
             "tta": tta, "split": "train (each fold's validation patients)", **table}
    scoring.write_report(rows, failures, out, about, challenge)
    choice = None
    if choose_postprocessing and rows:
        cases = _Cases([storage.join(runs[row["fold"]].validation_dir, f"{row['patient']}.npz") for row in rows])
        choice = postprocessing.choose(cases, challenge)
        trained_run.write_postprocessing(workdir, choice)
    return Summary(table, rows, failures, out, choice)


def format_summary(summary: Summary) -> str:
    lines = [f"Cross-validation ({len(summary.table['per_fold'])} folds, {len(summary.rows)} validation patients): "
             "mean over each fold's patients, then over folds", format_fold_table(summary.table)]
    if summary.failures:
        lines.append(f"{len(summary.failures)} patient(s) not scored (see {summary.output_dir}/errors.jsonl)")
    choice = summary.postprocessing
    if choice is not None:
        rules = ", ".join(json.dumps(r, sort_keys=True) for r in choice.rules) or "none (no rule improved)"
        lines.append(f"Post-processing: {rules}; mean validation Dice {choice.mean_dice_before:.4f} -> "
                     f"{choice.mean_dice_after:.4f}")
    lines.append(f"Reports: {summary.output_dir}/ (scores.csv, summary.json); per fold: "
                 f"{trained_run.FOLD_PREFIX}<k>/{trained_run.VALIDATION_DIR}/")
    return "\n".join(lines)
