"""The Beam job: patients fan out, records fan in to deterministic shards.

Graph (every step labelled as it appears in the Dataflow UI):

  Patients -> Reshuffle -> Preprocess (one patient per element, dead letters
  for failures, optionally isolated in a subprocess with a timeout)
    -> CountOutcomes (metrics) -> KeyByShard -> GroupByKey -> WriteShards
    -> WriteManifest (last: its presence marks the version complete)

Each patient's record is staged as a file under ``_staging/`` rather than
shuffled: GroupByKey then moves file names, not 30 MB records, which keeps
the local runner's memory flat, and a re-run after a crash reuses the
records already staged for the same version.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import platform
import signal
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_pipeline import patient as patient_lib
from beam_pipeline import sharding
from beam_pipeline.discovery import Failure, PatientSource
from shared import labels, schema
from shared.manifest import (DEFAULT_COMPRESSION, ERRORS_NAME, FORMAT, SPLITS, canonical_json, check_compression, join,
                             write_manifest)
from shared.nifti_io import write_bytes

NAMESPACE = "brats"
STAGING = "_staging"
# Test hook: the patient with this id kills its own process with SIGSEGV before
# preprocessing, standing in for a native crash (in ITK/N4, say). Read where
# the pipeline is built and pickled with the DoFn, so it reaches every worker
# and isolation subprocess, however they were started. Never set it in production.
FAULT_INJECT_SEGFAULT_ENV = "BRATS_FAULT_INJECT_SEGFAULT"
log = logging.getLogger(__name__)


@dataclasses.dataclass
class Plan:
    """Everything the launcher decided before the pipeline starts."""

    name: str
    version_id: str
    dataset_dir: str
    config: dict  # the fingerprinted preprocessing config
    runtime: dict  # isolation/timeout: not part of the version
    input_dir: str
    sources: list[PatientSource]
    discovery_failures: list[Failure]
    checksums: dict
    shard_counts: dict[str, int]
    folds: dict[str, int]
    stratified: bool


class PreprocessPatient(beam.DoFn):
    """One patient -> staged record file, or a failure with stage and reason."""

    def __init__(self, config: dict, staging_dir: str, isolated: bool = False):
        self._config = config
        self._staging = staging_dir
        self._isolated = isolated
        self._segfault_for = os.environ.get(FAULT_INJECT_SEGFAULT_ENV, "")

    def __setstate__(self, state):
        # Runs wherever the DoFn is unpickled: in the SDK worker (in-process or
        # multi-process), before Beam's _SubprocessDoFn creates its process pool
        # on the first element, so that pool starts its subprocess the safe way.
        self.__dict__.update(state)
        if state.get("_isolated"):
            use_forkserver()

    def process(self, source: PatientSource):
        staged = join(self._staging, f"{source.patient_id}.example")
        if FileSystems.exists(staged):  # staged by an earlier, interrupted run
            yield {"ok": True, "patient": source.patient_id, "split": source.split,
                   "staged": staged, "seconds": {}, "warnings": [], "resumed": True}
            return
        if self._segfault_for == source.patient_id:  # test hook, see FAULT_INJECT_SEGFAULT_ENV
            log.warning("%s=%s: crashing this process with SIGSEGV", FAULT_INJECT_SEGFAULT_ENV, source.patient_id)
            os.kill(os.getpid(), signal.SIGSEGV)
        start = time.perf_counter()
        try:
            result = patient_lib.preprocess(source, self._config)
            data = schema.encode(result.record)
        except patient_lib.PatientError as exc:
            log.warning("patient %s failed at %s: %s", source.patient_id, exc.stage, exc)
            failure = Failure(source.patient_id, exc.stage, exc.file, exc.reason).to_json()
            write_bytes(join(self._staging, f"{source.patient_id}.failed"), canonical_json(failure).encode())
            yield {"ok": False, "failure": failure}
            return
        temp = staged + ".tmp"
        write_bytes(temp, data)
        FileSystems.rename([temp], [staged])
        log.info("patient %s done in %.1fs", source.patient_id, time.perf_counter() - start)
        yield {"ok": True, "patient": source.patient_id, "split": source.split, "staged": staged,
               "seconds": result.seconds, "warnings": result.warnings, "resumed": False}


def use_forkserver() -> None:
    """Make ``forkserver`` this process's default multiprocessing start method.

    ``with_exception_handling(use_subprocess=True)`` runs each patient in a
    ``concurrent.futures.ProcessPoolExecutor(1)`` created with the default start
    method, which is ``fork`` on Linux before Python 3.14. The SDK worker runs
    gRPC threads, and forking it sometimes kills or hangs the child
    (grpc/grpc#37642, "skipping fork() handlers" in the log): patients were lost
    as "worker" failures in 4 of 20 runs, and one job failed with
    BrokenProcessPool. With ``forkserver`` the pool's processes are forked from
    a fresh, single-threaded server process instead (they import the modules
    they need; they inherit no monkeypatches). A start method chosen
    explicitly other than ``fork`` (``spawn``) is left alone.
    """
    if multiprocessing.get_start_method(allow_none=True) in (None, "fork"):
        multiprocessing.set_start_method("forkserver", force=True)


def crash_to_failure(dead_letter) -> dict:
    """Beam's dead letter (a crash, a timeout, a killed subprocess) as a failure."""
    source, (exc_type, exc_value, _) = dead_letter
    reason = f"worker crashed: {getattr(exc_type, '__name__', exc_type)}: {exc_value}"
    return {"ok": False, "failure": Failure(source.patient_id, "worker", "", reason).to_json()}


class CountOutcomes(beam.DoFn):
    """Metrics in the main worker process (a subprocess's metrics are lost)."""

    def __init__(self):
        self.ok = Metrics.counter(NAMESPACE, "patients_ok")
        self.resumed = Metrics.counter(NAMESPACE, "patients_resumed")
        self.n4_ms = Metrics.distribution(NAMESPACE, "n4_ms")
        self.total_ms = Metrics.distribution(NAMESPACE, "patient_ms")

    def process(self, outcome):
        if outcome["ok"]:
            self.ok.inc()
            if outcome["resumed"]:
                self.resumed.inc()
            elif outcome["seconds"]:
                self.n4_ms.update(int(1000 * outcome["seconds"].get("n4", 0.0)))
                self.total_ms.update(int(1000 * sum(outcome["seconds"].values())))
        else:
            Metrics.counter(NAMESPACE, f"patients_failed_{outcome['failure']['stage']}").inc()
        yield outcome


class WriteShard(beam.DoFn):
    def __init__(self, dataset_dir: str, shard_counts: dict[str, int], compression: str = DEFAULT_COMPRESSION):
        self._dir, self._counts, self._compression = dataset_dir, shard_counts, compression

    def process(self, keyed):
        (split, index), entries = keyed
        staged = sorted((key, path, pid) for key, path, pid in entries if path)
        info = sharding.write_shard(self._dir, join(self._dir, STAGING), split, index, self._counts[split],
                                    [(key, path) for key, path, _ in staged], self._compression)
        info["patients"] = [pid for _, _, pid in staged]
        Metrics.counter(NAMESPACE, "shards_written").inc()
        yield info


def environment() -> dict:
    """Versions that decide the bytes, read where the records are made."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for package in ("antspyx", "numpy", "nibabel", "apache-beam", "tensorflow", "tensorflow-cpu", "scikit-learn"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return versions


class WriteManifest(beam.DoFn):
    """Writes errors.jsonl, then manifest.json, then clears the staging area."""

    def __init__(self, plan: Plan):
        self._plan = plan

    def process(self, _, shards, outcomes):
        plan = self._plan
        failures = [f.to_json() for f in plan.discovery_failures] + [o["failure"] for o in outcomes if not o["ok"]]
        failures.sort(key=lambda f: (f["patient"], f["stage"], f["file"]))
        warnings = {o["patient"]: o["warnings"] for o in outcomes if o["ok"] and o["warnings"]}
        write_bytes(join(plan.dataset_dir, ERRORS_NAME),
                    "".join(canonical_json(f) + "\n" for f in failures).encode())
        write_manifest(plan.dataset_dir, build_manifest(plan, shards, failures, warnings))
        clear_staging(join(plan.dataset_dir, STAGING))
        yield len(failures)


def clear_staging(staging: str) -> None:
    leftovers = [m.path for m in FileSystems.match([join(staging, "*")])[0].metadata_list]
    if leftovers:
        FileSystems.delete(leftovers)
    if "://" not in staging and FileSystems.exists(staging):
        FileSystems.delete([staging])


def shard_compression(cfg: dict) -> str:
    """``shards.compression`` of a config ("GZIP" for configs written before the option)."""
    return check_compression(cfg.get("shards", {}).get("compression", DEFAULT_COMPRESSION))


def build_manifest(plan: Plan, shards: list[dict], failures: list[dict], warnings: dict) -> dict:
    splits = {}
    for split in SPLITS:
        mine = sorted((s for s in shards if s["split"] == split), key=lambda s: s["index"])
        splits[split] = {
            "patients": sorted(p for s in mine for p in s["patients"]),
            "shards": [{k: s[k] for k in ("file", "records", "bytes", "sha256")} for s in mine],
        }
    cfg = plan.config
    return {
        "format": FORMAT,
        "name": plan.name,
        "version_id": plan.version_id,
        "source": plan.input_dir,
        "config": cfg,
        "schema_version": schema.SCHEMA_VERSION,
        "record": {
            "channels": list(cfg["modalities"]),
            "classes": list(labels.CLASS_NAMES),
            "regions": {k: list(v) for k, v in labels.REGIONS.items()},
            "image_dtype": "float16",
            "mask_dtype": "uint8",
            "compression": shard_compression(cfg),
        },
        "inputs": plan.checksums,
        "splits": splits,
        "split_stratified_by_grade": plan.stratified,
        "folds": plan.folds,
        "failed": failures,
        "warnings": warnings,
        "environment": environment(),
    }


def build(root: beam.Pipeline, plan: Plan):
    """Adds the whole job to ``root``; returns the PCollection of failure counts."""
    staging = join(plan.dataset_dir, STAGING)
    runtime = plan.runtime
    isolate = bool(runtime["isolate"])
    good, crashed = (
        root
        | "Patients" >> beam.Create(plan.sources, reshuffle=False)
        | "Reshuffle" >> beam.Reshuffle()
        | "Preprocess" >> beam.ParDo(PreprocessPatient(plan.config, staging, isolated=isolate)).with_exception_handling(
            use_subprocess=isolate, timeout=runtime["timeout_s"] or None)
    )
    outcomes = (
        (good, crashed | "CrashToFailure" >> beam.Map(crash_to_failure))
        | "AllOutcomes" >> beam.Flatten()
        | "CountOutcomes" >> beam.ParDo(CountOutcomes())
    )
    empty = [((split, i), (0, "", "")) for split, n in plan.shard_counts.items() for i in range(n)]
    keyed = (
        outcomes
        | "OnlyOk" >> beam.Filter(lambda o: o["ok"])
        | "KeyByShard" >> beam.Map(_shard_entry, plan.shard_counts)
    )
    shards = (
        (keyed, root | "AllShards" >> beam.Create(empty))
        | "WithEmptyShards" >> beam.Flatten()
        | "GroupByShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(plan.dataset_dir, plan.shard_counts, shard_compression(plan.config)))
    )
    return (
        root
        | "ManifestTrigger" >> beam.Create([None])
        | "WriteManifest" >> beam.ParDo(
            WriteManifest(plan), shards=beam.pvalue.AsList(shards), outcomes=beam.pvalue.AsList(outcomes))
    )


def _shard_entry(outcome: dict, shard_counts: dict[str, int]):
    key = sharding.shard_key(outcome["patient"])
    index = sharding.shard_index(key, shard_counts[outcome["split"]])
    return (outcome["split"], index), (key, outcome["staged"], outcome["patient"])
