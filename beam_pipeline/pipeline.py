"""The Beam job: patients fan out, records fan in to deterministic shards.

Graph (every step labelled as it appears in the Dataflow UI); one chain, so
every runner computes all of it (Beam's DaskRunner computes only the graph's
last step and what feeds it):

  Patients -> Reshuffle -> Preprocess (one patient per element; a bad patient
  becomes a failure *value*, optionally isolated in a subprocess with a
  timeout) -> KeyByShard -> (+ EmptyShards) -> GroupByShard -> WriteShards
  (passes every outcome on) -> KeyForManifest -> GroupForManifest
  -> WriteManifest (last: its presence marks the version complete)

Only single-output ParDo, Flatten and GroupByKey are used: no tagged
outputs, no side inputs and no metrics that the summary depends on, which is
what Beam's DaskRunner supports.  Counts for the summary come from the
outcomes themselves (``run.json``).

Each patient's record is staged as a file under ``_staging/`` rather than
shuffled: GroupByKey then moves file names, not 30 MB records, which keeps
the local runner's memory flat, and a re-run after a crash reuses the
records already staged for the same version, warnings included.  A staged
record is already framed and compressed as its shard holds it, so the
shards are only joined at the end; no step of the job imports TensorFlow.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipeline import fingerprint, sharding
from beam_pipeline.staging import FAULT_INJECT_SEGFAULT_ENV, STAGED_RECORD, process_patient  # noqa: F401
from preprocessing.discovery import PatientSource
from shared import failures as failures_lib
from shared import geometry as geometry_lib
from shared import schema, storage, tfrecord
from shared.manifest import FORMAT, RUN_NAME, SPLITS, canonical_json, write_manifest
from shared.spec import PreprocessingSpec
from shared.storage import join, write_bytes

NAMESPACE = "brats"
STAGING = "_staging"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class Plan:
    """Everything the launcher decided before the pipeline starts."""

    name: str
    version_id: str
    dataset_dir: str
    config: dict  # the fingerprinted preprocessing config
    runtime: dict  # isolation/timeout: not part of the version
    input_dir: str | list[str]  # several: a dataset built from several cohorts
    sources: list[PatientSource]
    discovery_failures: list[dict]
    checksums: dict
    shard_counts: dict[str, int]
    folds: dict[str, int]
    stratified: bool
    code: dict  # beam_pipeline.fingerprint.code_fingerprint() of the launcher

    @property
    def spec(self) -> PreprocessingSpec:
        return PreprocessingSpec.from_config(self.config)


def use_forkserver() -> None:
    """Make ``forkserver`` this process's default multiprocessing start method.

    Forking a Beam SDK worker, which runs gRPC threads, sometimes kills or
    hangs the child (grpc/grpc#37642, "skipping fork() handlers" in the log):
    patients were lost as "worker" failures in 4 of 20 runs.  With
    ``forkserver`` the isolation processes are forked from a fresh,
    single-threaded server process instead.  A start method chosen explicitly
    other than ``fork`` (``spawn``) is left alone.
    """
    if multiprocessing.get_start_method(allow_none=True) in (None, "fork"):
        multiprocessing.set_start_method("forkserver", force=True)


class PreprocessPatient(beam.DoFn):
    """One patient -> its outcome: a staged record, or a failure naming stage and file.

    With ``isolated`` the patient runs in a one-process pool: a native crash
    (a segfault in ITK) or a time-out becomes this patient's failure, and the
    pool is replaced for the next one.  Exceptions other than bad input are
    bugs and fail the job, isolated or not.
    """

    def __init__(self, config: dict, staging_dir: str, libraries: dict, isolated: bool = False,
                 timeout_s: float | None = None):
        self._config, self._staging, self._libraries = config, staging_dir, libraries
        self._isolated, self._timeout = isolated, timeout_s
        self._segfault_for = os.environ.get(FAULT_INJECT_SEGFAULT_ENV, "")
        self._pool = None

    def __getstate__(self):
        return dict(self.__dict__, _pool=None)

    def setup(self):
        fingerprint.check_worker_libraries(self._libraries)
        if self._isolated:
            use_forkserver()

    def process(self, source: PatientSource):
        args = (source, self._config, self._staging, self._segfault_for)
        outcome = self._isolated_call(source, args) if self._isolated else process_patient(*args)
        Metrics.counter(NAMESPACE, "patients_ok" if outcome["ok"] else "patients_failed").inc()
        yield outcome

    def _isolated_call(self, source: PatientSource, args) -> dict:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context())
        future = self._pool.submit(process_patient, *args)
        try:
            return future.result(timeout=self._timeout)
        except concurrent.futures.process.BrokenProcessPool as exc:
            reason = f"worker crashed: BrokenProcessPool: {exc}"
        except concurrent.futures.TimeoutError:
            reason = f"timed out after {self._timeout:.0f} s (runtime.timeout_s)"
        self._discard_pool()
        failure = failures_lib.Failure(source.patient_id, "worker", "", reason).to_json()
        write_bytes(join(self._staging, f"{source.patient_id}.failed"), canonical_json(failure).encode())
        return {"ok": False, "patient": source.patient_id, "failure": failure}

    def _discard_pool(self):
        pool, self._pool = self._pool, None
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()  # a timed-out patient would otherwise keep its core busy
        pool.shutdown(wait=False, cancel_futures=True)

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)


# ---------------------------------------------------------------------- shards

def shard_entry(outcome: dict, shard_counts: dict[str, int]):
    """A good outcome keyed by its shard; a failure keyed to no shard (split "")."""
    if not outcome["ok"]:
        return ("", -1), outcome
    key = sharding.shard_key(outcome["patient"])
    return (outcome["split"], sharding.shard_index(key, shard_counts[outcome["split"]])), outcome


class WriteShard(beam.DoFn):
    """Writes one shard from its staged records and passes the shard and its outcomes on."""

    def __init__(self, dataset_dir: str, shard_counts: dict[str, int], compression: str):
        self._dir, self._counts, self._compression = dataset_dir, shard_counts, compression

    def process(self, keyed):
        (split, index), outcomes = keyed
        outcomes = [o for o in outcomes if o is not None]
        shard = None
        if split:
            staged = sorted((sharding.shard_key(o["patient"]), o["staged"], o["patient"]) for o in outcomes)
            shard = sharding.write_shard(self._dir, join(self._dir, STAGING), split, index, self._counts[split],
                                         [(key, path) for key, path, _ in staged], self._compression)
            shard["patients"] = [pid for _, _, pid in staged]
        yield {"shard": shard, "outcomes": outcomes}


# -------------------------------------------------------------------- manifest

class WriteManifest(beam.DoFn):
    """Writes errors.jsonl, run.json, then manifest.json, then clears the staging area.

    A run in which no patient succeeded writes errors.jsonl only: the version
    is never marked complete, and the launcher reports why.
    """

    def __init__(self, plan: Plan):
        self._plan = plan

    def process(self, keyed):
        _, parts = keyed
        plan = self._plan
        parts = list(parts)
        shards = [p["shard"] for p in parts if p["shard"] is not None]
        outcomes = sorted((o for p in parts for o in p["outcomes"]), key=lambda o: o["patient"])
        failures = plan.discovery_failures + [o["failure"] for o in outcomes if not o["ok"]]
        failures_lib.write_errors(plan.dataset_dir, failures)
        good = [o for o in outcomes if o["ok"]]
        write_bytes(join(plan.dataset_dir, RUN_NAME), (json.dumps(run_facts(plan, outcomes), indent=2) + "\n").encode())
        if good:
            warnings = {o["patient"]: o["warnings"] for o in good if o["warnings"]}
            scans = geometry_lib.summarize((o["geometry"] for o in good),
                                           geometry_lib.resample_spacing(plan.config) is not None)
            write_manifest(plan.dataset_dir, build_manifest(plan, shards, sorted(failures, key=failures_lib.sort_key),
                                                            warnings, scans))
            storage.delete_tree(join(plan.dataset_dir, STAGING))
        yield len(good)


def run_facts(plan: Plan, outcomes: list[dict]) -> dict:
    """What one run did (not part of the version): source folder, counts, stage seconds."""
    good = [o for o in outcomes if o["ok"]]
    fresh = [o for o in good if not o.get("resumed")]
    stages = sorted({s for o in fresh for s in o["seconds"]})
    per_stage = {}
    for stage in stages:
        values = [o["seconds"].get(stage, 0.0) for o in fresh]
        per_stage[stage] = {"count": len(values), "mean": sum(values) / len(values),
                            "min": min(values), "max": max(values)}
    return {"source": plan.input_dir, "version_id": plan.version_id, "patients_ok": len(good),
            "patients_failed": len(outcomes) - len(good), "patients_resumed": len(good) - len(fresh),
            "stage_seconds": per_stage}


def _cohorts(plan: Plan) -> dict:
    """Each cohort's challenge (naming) and patients, so a dataset from several folders says which is which."""
    out: dict = {}
    for source in plan.sources:
        entry = out.setdefault(source.cohort, {"challenge": source.cohort.split("#")[0], "patients": []})
        entry["patients"].append(source.patient_id)
    return {name: dict(entry, patients=sorted(entry["patients"])) for name, entry in sorted(out.items())}


def build_manifest(plan: Plan, shards: list[dict], failures: list[dict], warnings: dict, scans: dict) -> dict:
    """The manifest: deterministic, and the same wherever the input folder lay (``run.json`` says where).

    ``scans``: the training scans' geometry (:func:`shared.geometry.summarize`),
    which prediction, evaluation and the app compare new scans with.
    """
    splits = {}
    for split in SPLITS:
        mine = sorted((s for s in shards if s["split"] == split), key=lambda s: s["index"])
        splits[split] = {
            "patients": sorted(p for s in mine for p in s["patients"]),
            "shards": [{k: s[k] for k in ("file", "records", "bytes", "sha256")} for s in mine],
        }
    cfg, spec = plan.config, plan.spec
    return {
        "format": FORMAT,
        "name": plan.name,
        "version_id": plan.version_id,
        "config": cfg,
        "schema_version": schema.SCHEMA_VERSION,
        "record": {
            "channels": list(spec.modalities),
            "challenge": spec.challenge.name,
            "label_convention": spec.label_convention,
            "label_values": [0, *spec.challenge.label_values],
            "classes": list(spec.challenge.class_keys),
            "regions": {k: list(v) for k, v in spec.challenge.region_classes().items()},
            "image_dtype": "float16",
            "mask_dtype": "uint8",
            "compression": spec.compression,
        },
        "inputs": plan.checksums,
        "cohorts": _cohorts(plan),
        "splits": splits,
        "split_stratified_by_grade": plan.stratified,
        "folds": plan.folds,
        "failed": failures,
        "warnings": warnings,
        geometry_lib.KEY: scans,
        "code": plan.code,
    }


# ---------------------------------------------------------------------- graph

def build(root: beam.Pipeline, plan: Plan):
    """Adds the whole job to ``root`` as one chain; returns its last PCollection."""
    staging = join(plan.dataset_dir, STAGING)
    runtime = plan.runtime
    empty = [((split, i), None) for split, n in plan.shard_counts.items() for i in range(n)] + [(("", -1), None)]
    keyed = (
        root
        | "Patients" >> beam.Create(plan.sources, reshuffle=False)
        | "Reshuffle" >> beam.Reshuffle()
        | "Preprocess" >> beam.ParDo(PreprocessPatient(
            plan.config, staging, plan.code["libraries"], isolated=bool(runtime["isolate"]),
            timeout_s=float(runtime["timeout_s"]) or None))
        | "KeyByShard" >> beam.Map(shard_entry, plan.shard_counts)
    )
    return (
        (keyed, root | "EmptyShards" >> beam.Create(empty, reshuffle=False))
        | "WithEmptyShards" >> beam.Flatten()
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(plan.dataset_dir, plan.shard_counts, plan.spec.compression))
        | "KeyForManifest" >> beam.Map(lambda part: (None, part))
        | "GroupForManifest" >> beam.GroupByKey()
        | "WriteManifest" >> beam.ParDo(WriteManifest(plan))
    )
