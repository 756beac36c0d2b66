"""Predict a cohort: in this process, or fanned out on a Beam runner (FnApiRunner, Dask, Dataflow).

Either way a patient that cannot be predicted (a missing modality, a corrupt
file, shapes that disagree) becomes one line of ``errors.jsonl`` in the output
folder, naming patient, stage, file and reason, and the others go on.  The
summary (``summary.json`` and the printed lines) counts both.

On Beam each patient goes through three ``Map`` steps: preprocessing (N4,
seconds per patient), the network (the model loaded once per worker process
and shared by its threads), and writing.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import time
from typing import Callable, Iterable

from shared import failures as failures_lib
from shared.beam_runners import runner_aliases
from shared.storage import write_bytes
from serving import inputs, outputs, prediction, predictor as predictor_lib

ERRORS = failures_lib.ERRORS_NAME
SUMMARY = "summary.json"


@dataclasses.dataclass
class Options:
    """What every patient of a cohort is predicted with (picklable for Beam)."""

    model_path: str | tuple[str, ...]  # a model, run folder or cross-validation workdir; several: an ensemble
    output_dir: str
    data_dir: str | None = None
    window: str | None = None  # None: the training patch; "volume"; or "X,Y,Z"
    tta: str = "none"
    overlap: float = 0.5
    pictures: bool = True
    save_probabilities: bool = False  # also <id>.npz: the (ensemble's) softmax, float16, before post-processing
    postprocessing: str | None = "auto"  # "auto": the models' postprocessing.json if any; "none"; or a path
    allow_other_challenge: bool = False  # segment files named for a challenge numbered otherwise (issue 21)

    def load(self, with_model: bool = True) -> predictor_lib.Predictor:
        return predictor_lib.load_predictor(self.model_path, self.data_dir, self.window, with_model,
                                         postprocessing=self.postprocessing)


@dataclasses.dataclass
class Summary:
    predicted: list[dict]  # patient, files written, volumes, seconds
    failures: list[dict]
    wall_seconds: float

    def to_json(self) -> dict:
        return {"predicted": len(self.predicted), "failed": len(self.failures), "patients": self.predicted,
                "failures": self.failures, "wall_seconds": round(self.wall_seconds, 2)}


def _failure(folder: str, exc: Exception) -> dict:
    return failures_lib.from_exception(posixpath.basename(folder.rstrip("/")), exc, "predict")


def _outcome(pred: prediction.Prediction, paths: dict) -> dict:
    return {"patient": pred.patient_id, "files": paths, "volumes_ml": pred.volumes_ml,
            "seconds": {k: round(v, 2) for k, v in pred.seconds.items()}}


def predict_local(options: Options, folders: list[str], echo: Callable[[str], None] = print,
                  predictor: predictor_lib.Predictor | None = None) -> Summary:
    """One patient after another in this process (the default; fine for a few dozen)."""
    start = time.time()
    predictor = predictor or options.load()
    done, failures = [], []
    for n, folder in enumerate(folders, 1):
        try:
            source, convention = inputs.source_from_folder(folder, predictor, options.allow_other_challenge)
            pred = prediction.predict_patient(predictor, source, convention, options.tta, options.overlap,
                                              probabilities=options.save_probabilities)
            paths = outputs.write_outputs(pred, options.output_dir, predictor, options.pictures)
        except prediction.PATIENT_INPUT_ERRORS as exc:  # a bad patient is reported; a bug stops the run
            failure = _failure(folder, exc)
            failures.append(failure)
            echo(f"  [{n}/{len(folders)}] {failure['patient']} FAILED at {failure['stage']}"
                 f"{' (' + failure['file'] + ')' if failure['file'] else ''}: {failure['reason']}")
            continue
        done.append(_outcome(pred, paths))
        first = next(iter(pred.challenge.regions))  # WT for the gliomas, GTV for MEN-RT
        echo(f"  [{n}/{len(folders)}] {pred.patient_id}: preprocess {pred.seconds['preprocess']:.1f} s, "
             f"inference {pred.seconds['inference']:.1f} s, {first} {done[-1]['volumes_ml'][first]:.1f} mL")
    return _finish(options.output_dir, done, failures, time.time() - start)


def _finish(output_dir: str, done: list[dict], failures: list[dict], wall: float) -> Summary:
    summary = Summary(sorted(done, key=lambda d: d["patient"]), sorted(failures, key=lambda f: f["patient"]), wall)
    failures_lib.write_errors(output_dir, summary.failures)
    write_bytes(posixpath.join(output_dir, SUMMARY), (json.dumps(summary.to_json(), indent=2) + "\n").encode())
    return summary


def format_summary(summary: Summary, output_dir: str) -> str:
    lines = [f"Predicted {len(summary.predicted)} patient(s), {len(summary.failures)} failed, "
             f"in {summary.wall_seconds:.1f} s; outputs in {output_dir}"]
    lines += [failures_lib.format_line(f) for f in summary.failures]
    if summary.failures:
        lines.append(f"  failures are listed in {posixpath.join(output_dir, ERRORS)}")
    return "\n".join(lines)


# ---------------------------------------------------------------- Beam --------
#
# As in the data engine's graph (beam_pipeline/pipeline.py), only single-output
# steps, Flatten and GroupByKey are used: a patient that fails travels on as a
# value (``_Failed``) through every step instead of on a tagged output, and the
# summary is written by one step after a GroupByKey, so runners that merge
# tagged outputs or lack side inputs run the same graph.  A bug (any exception
# outside ``prediction.PATIENT_INPUT_ERRORS``) fails the job.


@dataclasses.dataclass(frozen=True)
class _Failed:
    """A patient that could not be predicted, carried to the summary as a value."""

    failure: dict


_LOADED: dict[tuple[str, bool], predictor_lib.Predictor] = {}  # per worker process


def _loaded(options: Options, with_model: bool) -> predictor_lib.Predictor:
    """``options.load(with_model)``, once per worker process: the model for Segment, the run's
    preprocessing and provenance (no model) for Preprocess and Write.  A process-wide cache, since a
    Dask worker sets a step up again for every partition (every patient with ``--dask_partition_size=1``)."""
    key = (repr(options), with_model)
    if key not in _LOADED:
        _LOADED[key] = options.load(with_model=with_model)
    return _LOADED[key]


def _segment_fn(options: Options):
    """Prepared -> (Prepared, (classes, kept probabilities, softmax)), or ``_Failed`` passed on.

    A plain function rather than Beam's RunInference: RunInference batches
    with BatchElements, which emits a partition's last batch in
    ``finish_bundle``, and the DaskRunner drops what ``finish_bundle`` emits,
    so on Dask every patient vanished.  With one patient per call there is
    nothing to batch, and the model is still loaded once per worker process.
    """
    def segment(item):
        if isinstance(item, _Failed):
            return item
        predictor = _loaded(options, with_model=True)
        try:
            probs = prediction.infer_probabilities(predictor, item, options.tta, options.overlap)
        except prediction.PATIENT_INPUT_ERRORS as exc:
            return _Failed(_failure(item.source.patient_id, exc))
        kept = probs if options.save_probabilities else None
        return item, (prediction.classes_of(predictor, probs), kept, predictor.decoding is None)

    return segment


def _prepare_fn(options: Options):
    """folder -> Prepared, or ``_Failed``; a model that cannot be loaded stops the job."""
    def prepare(folder: str):
        predictor = _loaded(options, with_model=False)  # its preprocessing only; the network runs in Segment
        try:
            source, convention = inputs.source_from_folder(folder, predictor, options.allow_other_challenge)
            return prediction.prepare(predictor, source, convention, threads=1,  # Beam: a patient per core
                                      display=options.pictures)
        except prediction.PATIENT_INPUT_ERRORS as exc:
            return _Failed(_failure(folder, exc))

    return prepare


def _finish_fn(options: Options):
    """(Prepared, inference) -> ("ok", files written) or ("failed", failure).

    The JSON beside each segmentation names the model and dataset version, as
    the local path's does; the worker reads them from the run's lineage.
    """
    def finish(segmented):
        if isinstance(segmented, _Failed):
            return "failed", segmented.failure
        item, (classes, probs, softmax) = segmented
        provenance = _loaded(options, with_model=False)
        try:
            pred = prediction.finish(item, classes, display=options.pictures, probabilities=probs, softmax=softmax)
            paths = outputs.write_outputs(pred, options.output_dir, provenance, options.pictures)
        except prediction.PATIENT_INPUT_ERRORS as exc:
            return "failed", _failure(item.source.patient_id, exc)
        return "ok", _outcome(pred, paths)

    return finish


def predict_beam(options: Options, folders: list[str], beam_args: list[str]) -> Summary:
    """The same predictions on a Beam runner (FnApiRunner locally, Dask, or Dataflow)."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    start = time.time()
    with beam.Pipeline(options=PipelineOptions(runner_aliases(beam_args))) as root:
        _ = (root
             | "Folders" >> beam.Create(folders, reshuffle=False) | "Reshuffle" >> beam.Reshuffle()
             | "Preprocess" >> beam.Map(_prepare_fn(options))
             | "Segment" >> beam.Map(_segment_fn(options))
             | "Write" >> beam.Map(_finish_fn(options))
             | "KeyForSummary" >> beam.Map(lambda outcome: (None, outcome))
             | "GroupForSummary" >> beam.GroupByKey()
             | "Summary" >> beam.Map(lambda grouped: _write_beam_summary(grouped[1], options.output_dir, start)))
    return _read_summary(options.output_dir)


def _write_beam_summary(outcomes: Iterable, output_dir: str, start: float) -> None:
    outcomes = list(outcomes)
    done = [d for tag, d in outcomes if tag == "ok"]
    failures = [d for tag, d in outcomes if tag == "failed"]
    _finish(output_dir, done, failures, time.time() - start)


def _read_summary(output_dir: str) -> Summary:
    from shared.storage import read_bytes

    data = json.loads(read_bytes(posixpath.join(output_dir, SUMMARY)))
    return Summary(data["patients"], data["failures"], data["wall_seconds"])
