"""From a cohort folder and a config to a finished dataset version.

The launcher discovers the patients, fingerprints their files into the
version id, assigns splits and shard counts, runs the Beam job (or notices
the version is already complete) and reads back the summary.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions, TestOptions
from apache_beam.runners.runner import PipelineState

from beam_pipeline import fingerprint, sharding, splits
from beam_pipeline.pipeline import STAGED_RECORD, STAGING, Plan, build
from preprocessing import discovery
from preprocessing.patient import LOST_TUMOUR
from shared import failures as failures_lib
from shared import layouts, storage
from shared.manifest import is_complete, read_manifest, read_run, version_id
from shared.spec import PreprocessingSpec
from shared.storage import join
from shared.beam_runners import runner_aliases

# Config sections that change how the job runs, never the bytes it writes.
RUNTIME_SECTION = "runtime"


@dataclasses.dataclass
class Summary:
    name: str
    version_id: str
    dataset_dir: str
    patients: dict[str, int]  # per split
    failures: list[dict]
    warnings: dict
    wall_seconds: float
    already_complete: bool = False
    run: dict = dataclasses.field(default_factory=dict)  # run.json: counts and stage seconds of the run
    not_run: str = ""  # why the runner returned without running the job (a dry run, a template); "" if it ran

    @property
    def failed_patients(self) -> int:
        return len({f["patient"] for f in self.failures})


def fingerprinted_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != RUNTIME_SECTION}


class NoPatientSucceeded(RuntimeError):
    """Every patient failed: the version is not marked complete."""


class JobNotFinished(RuntimeError):
    """The runner returned, nothing failed, yet no manifest was written: said as such, not as failed patients."""


DRY_RUN = "dry run: job built, nothing ran"


BRAIN_MASKS = ("nonzero", "ants_get_mask")


def check_config(cfg: dict) -> PreprocessingSpec:
    """Refuse a config that would fail every patient, before any work."""
    spec = PreprocessingSpec.from_config(cfg)  # layout, crop mode, shards.compression
    if cfg["brain_mask"] not in BRAIN_MASKS:
        raise ValueError(f"brain_mask must be one of {', '.join(BRAIN_MASKS)}, not {cfg['brain_mask']!r}")
    ships = spec.challenge.modalities
    unknown = [m for m in spec.modalities if m not in ships]
    if unknown:
        raise ValueError(f"{spec.challenge.name} has no modality {', '.join(unknown)}; it ships {', '.join(ships)}"
                         f" (--config.modalities={','.join(ships)}, or configs/preprocess/challenge.py:"
                         f"{spec.challenge.name} sets it)")
    return spec


def check_runner(cfg: dict, options: PipelineOptions) -> None:
    """Refuse what the chosen runner cannot do, with the fix, before the job starts."""
    runner = str(options.view_as(StandardOptions).runner or "")
    if "dask" in runner.lower() and cfg[RUNTIME_SECTION]["isolate"]:
        raise ValueError(
            "runtime.isolate is not supported on DaskRunner: Dask workers are daemonic processes, which may "
            "not start the subprocess that isolation needs. Pass --config.runtime.isolate=false (a native "
            "crash then restarts the Dask worker, and Dask retries its tasks)")


def _inputs(input_dir) -> list[str]:
    """One input folder, or several (a dataset from several cohorts), as a list."""
    dirs = [input_dir] if isinstance(input_dir, str) else list(input_dir)
    if not dirs:
        raise ValueError("no input folder given")
    return dirs


def _strata(patients) -> dict[str, str]:
    """What splits are stratified by: the grade, and the cohort where there are several."""
    several = len({p.cohort for p in patients}) > 1
    return {p.patient_id: f"{p.cohort}/{p.grade}" if several else p.grade for p in patients}


def plan_dataset(cfg: dict, input_dir, output_dir: str, progress=None) -> Plan:
    """Discover, fingerprint and split; no heavy work yet.  ``input_dir``: one folder or a list."""
    spec = check_config(cfg)
    layout = layouts.get_layout(cfg["layout"])
    inputs = _inputs(input_dir)
    cohort = discovery.discover_cohorts(inputs, layout, spec.modalities, cfg["require_seg"], progress=progress)
    versioned = fingerprinted_config(cfg)
    code = fingerprint.code_fingerprint()
    cohorts = {p.patient_id: p.cohort for p in cohort.patients}
    # the cohorts enter the id: the same files grouped into other cohorts are other records
    vid = version_id(cohort.checksums if len(inputs) == 1 else {"files": cohort.checksums, "cohorts": cohorts},
                     versioned, code)
    plan_split = splits.split_patients(
        _strata(cohort.patients), cfg["split"]["val_fraction"], cfg["split"]["seed"], cfg["split"]["num_folds"],
    )
    for p in cohort.patients:
        p.split = plan_split.assignment[p.patient_id]
    target = int(cfg["shards"]["target_mb"] * 2**20)
    counts = {s: sharding.num_shards(sum(p.split == s for p in cohort.patients), spec.record_bytes(), target)
              for s in ("train", "val")}
    return Plan(
        name=cfg["name"], version_id=vid, dataset_dir=join(output_dir, cfg["name"], vid),
        config=versioned, runtime=dict(cfg[RUNTIME_SECTION]), input_dir=inputs[0] if len(inputs) == 1 else inputs,
        sources=cohort.patients, discovery_failures=[f.to_json() for f in cohort.failures],
        checksums=cohort.checksums, shard_counts=counts, folds=plan_split.folds,
        stratified=plan_split.stratified, code=code,
    )


def _release(result) -> None:
    """Close the Dask client that DaskRunner opens for each run (and never closes)."""
    client = getattr(result, "client", None)
    if client is not None:
        client.close()


def summary_from_manifest(dataset_dir: str, wall: float, already: bool) -> Summary:
    manifest = read_manifest(dataset_dir)
    return Summary(
        name=manifest["name"], version_id=manifest["version_id"], dataset_dir=dataset_dir,
        patients={s: len(v["patients"]) for s, v in manifest["splits"].items()},
        failures=manifest["failed"], warnings=manifest["warnings"], wall_seconds=wall,
        already_complete=already, run={} if already else read_run(dataset_dir),
    )


def _no_patient_message(plan: Plan, failures: list[dict]) -> str:
    lines = [f"no patient could be preprocessed ({len(failures)} failure(s)); version {plan.version_id} is "
             f"not marked complete. The reasons (also in {join(plan.dataset_dir, failures_lib.ERRORS_NAME)}):"]
    lines += [failures_lib.format_line(f) for f in failures[:10]]
    if len(failures) > 10:
        lines.append(f"    ... and {len(failures) - 10} more")
    return "\n".join(lines)


def run(cfg: dict, input_dir, output_dir: str, beam_args: list[str], echo=print) -> Summary:
    """Build the dataset version for ``cfg`` (a plain dict of the config) from one input folder or a list."""
    start = time.time()
    options = PipelineOptions(runner_aliases(beam_args))
    check_runner(cfg, options)
    where = ", ".join(_inputs(input_dir))
    echo(f"Discovering patients under {where} (challenge {cfg['layout']}) and checksumming their files...")
    plan = plan_dataset(cfg, input_dir, output_dir, progress=_progress_printer(echo))
    echo(f"{len(plan.sources)} patients to process, {len(plan.discovery_failures)} unusable folder(s); "
         f"version {plan.version_id} -> {plan.dataset_dir}")
    if is_complete(plan.dataset_dir):
        echo("This version is already complete; nothing to do.")
        return summary_from_manifest(plan.dataset_dir, time.time() - start, True)
    if not plan.sources:
        failures_lib.write_errors(plan.dataset_dir, plan.discovery_failures)
        raise NoPatientSucceeded(_no_patient_message(plan, plan.discovery_failures))
    with ProgressReporter(join(plan.dataset_dir, STAGING), len(plan.sources), echo):
        root = beam.Pipeline(options=options)
        try:
            with root:
                build(root, plan)
        except Exception as exc:  # the runner gave up (a lost worker, a bug): same error, plus how to resume
            exc.add_note(_resume_note(plan))
            raise
        finally:
            _release(getattr(root, "result", None))
    not_run = not_run_reason(options, getattr(root, "result", None))
    if not_run:
        return Summary(plan.name, plan.version_id, plan.dataset_dir, {}, [], {}, time.time() - start, not_run=not_run)
    if not is_complete(plan.dataset_dir):
        raise _unfinished(plan, options)
    return summary_from_manifest(plan.dataset_dir, time.time() - start, False)


def _resume_note(plan: Plan) -> str:
    """What a failed run leaves behind, so the user knows a re-run does not start from scratch."""
    staging = join(plan.dataset_dir, STAGING)
    try:
        staged = sum(e.path.endswith(STAGED_RECORD + ".json") for e in storage.match(join(staging, "*")))
    except Exception:  # nothing staged (an object store may refuse to list a missing prefix)
        staged = 0
    return (f"The job stopped before version {plan.version_id} was complete; {staged} of {len(plan.sources)} "
            f"patients' records are staged under {staging}. Run the same command again to resume: they are reused.")


def not_run_reason(options: PipelineOptions, result) -> str:
    """Why the runner returned without running the job, or "" when it ran to an end.

    A dry run (``--dry_run=True``) and a classic template (``--template_location``)
    only build the job; Dataflow with ``--no_wait_until_finish`` returns while it
    runs.  None of these is a failure, and none wrote a manifest.
    """
    if options.view_as(TestOptions).dry_run:
        return DRY_RUN
    template = options.view_as(GoogleCloudOptions).template_location
    if template:
        return f"{DRY_RUN} here: the Dataflow template is at {template}, its files under the staging location"
    state = getattr(result, "state", None)
    if state is not None and not PipelineState.is_terminal(state):
        return (f"the job was handed to the runner and is {state}; run the same command again once it has "
                "finished to read the summary (a complete version is reused)")
    return ""


def _unfinished(plan: Plan, options: PipelineOptions) -> RuntimeError:
    """The error for a run that left no manifest: failed patients if any were recorded, else the runner's silence."""
    failures = failures_lib.read_errors(plan.dataset_dir)
    if failures:
        return NoPatientSucceeded(_no_patient_message(plan, failures))
    runner = options.view_as(StandardOptions).runner or "the default runner"
    return JobNotFinished(f"{runner} returned without an error, but version {plan.version_id} has no manifest "
                          f"and no patient failure was recorded: nothing says the job ran. Run the same command "
                          "again to resume (records already staged are reused)")


class ProgressReporter:
    """Prints how many patients are done while the job runs, from the staging area.

    Workers stage one file per finished patient (``.record.json``, or ``.failed``
    with the reason), so counting them works on every runner, including
    multi-process ones whose workers cannot print to this terminal.
    """

    def __init__(self, staging_dir: str, total: int, echo, interval: float = 5.0):
        self._staging, self._total, self._echo, self._interval = staging_dir, total, echo, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._start = time.time()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _count(self) -> tuple[int, int]:
        try:
            names = [e.path for e in storage.match(join(self._staging, "*"))]
        except Exception:  # nothing staged yet (an object store may refuse to list a missing prefix)
            return 0, 0
        return sum(n.endswith(STAGED_RECORD + ".json") for n in names), sum(n.endswith(".failed") for n in names)

    def _loop(self):
        last = None
        while not self._stop.wait(self._interval):
            done, failed = self._count()
            if (done, failed) != last and done + failed:
                elapsed = time.time() - self._start
                left = self._total - done - failed
                eta = f", about {elapsed / (done + failed) * left:.0f} s left" if left > 0 else ""
                self._echo(f"  [{done + failed}/{self._total}] patients preprocessed ({failed} failed), "
                           f"{elapsed:.0f} s{eta}")
                last = (done, failed)


def _progress_printer(echo):
    def progress(done: int, total: int):
        if done == total or done % max(1, total // 10) == 0:
            echo(f"  checksummed {done}/{total} files")
    return progress


def format_summary(summary: Summary) -> str:
    if summary.not_run:
        return f"{summary.not_run}\n  version {summary.version_id} would go to {summary.dataset_dir} (nothing written)"
    lines = [
        f"Dataset {summary.name} version {summary.version_id}"
        + (" (already complete, reused)" if summary.already_complete else ""),
        f"  directory: {summary.dataset_dir}",
        "  patients written: " + ", ".join(f"{s} {n}" for s, n in summary.patients.items()),
        f"  patients failed: {summary.failed_patients} (details in errors.jsonl)",
    ]
    lines += [failures_lib.format_line(f) for f in summary.failures]
    if summary.warnings:
        lines.append(f"  warnings for {len(summary.warnings)} patient(s) (see manifest.json)")
        lost = [pid for pid, notes in summary.warnings.items() if any(LOST_TUMOUR in n for n in notes)]
        if lost:
            lines.append(f"  {len(lost)} patient(s) lose tumour voxels outside the crop box: "
                         f"{', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''} (a larger crop keeps them)")
    n4 = summary.run.get("stage_seconds", {}).get("n4")
    if n4:
        lines.append(f"  N4 seconds per patient: mean {n4['mean']:.1f}, min {n4['min']:.1f}, "
                     f"max {n4['max']:.1f} over {n4['count']}")
    if summary.run.get("patients_resumed"):
        lines.append(f"  reused {summary.run['patients_resumed']} record(s) staged by an interrupted run")
    lines.append(f"  wall time: {summary.wall_seconds:.1f} s")
    return "\n".join(lines)
