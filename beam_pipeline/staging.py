"""One patient to a staged record: the work of one element of the Beam job.

Kept apart from :mod:`beam_pipeline.pipeline` and free of Apache Beam and
TensorFlow: it is the function an isolation subprocess (``runtime.isolate``)
unpickles and runs, so the subprocess imports only what one patient needs.
(Under ``forkserver`` the server still imports the worker's ``__main__``,
Beam's SDK harness, once per worker: multiprocessing re-imports a parent's
main module in every child otherwise; BUILD_NOTES, Preprocessing.)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

from preprocessing import patient as patient_lib
from preprocessing.discovery import PatientSource
from shared import failures as failures_lib
from shared import geometry as geometry_lib
from shared import schema, storage, tfrecord
from shared.manifest import canonical_json
from shared.spec import PreprocessingSpec
from shared.storage import join, write_bytes

STAGED_RECORD = ".record"  # <patient>.record: the shard piece; <patient>.record.json: its outcome

# Test hook: the patient with this id kills its own process with SIGSEGV before
# preprocessing, standing in for a native crash (in ITK/N4, say). Read where
# the pipeline is built and pickled with the DoFn, so it reaches every worker
# and isolation subprocess, however they were started. Never set it in production.
FAULT_INJECT_SEGFAULT_ENV = "BRATS_FAULT_INJECT_SEGFAULT"
log = logging.getLogger(__name__)


def process_patient(source: PatientSource, config: dict, staging: str, segfault_for: str = "") -> dict:
    """Preprocess one patient into a staged record; the outcome as a plain dict.

    A patient staged by an earlier, interrupted run of the same version is
    reused with the outcome (split, warnings) staged beside it.  Bad input
    returns a failure outcome; a bug raises.
    """
    staged = join(staging, f"{source.patient_id}{STAGED_RECORD}")
    outcome_path = staged + ".json"
    if storage.exists(outcome_path):
        return dict(json.loads(storage.read_bytes(outcome_path)), resumed=True)
    if segfault_for == source.patient_id:  # test hook, see FAULT_INJECT_SEGFAULT_ENV
        log.warning("%s=%s: crashing this process with SIGSEGV", FAULT_INJECT_SEGFAULT_ENV, source.patient_id)
        os.kill(os.getpid(), signal.SIGSEGV)
    start = time.perf_counter()
    try:
        result = patient_lib.preprocess(source, config, threads=1)
    except patient_lib.PatientError as exc:
        log.warning("patient %s failed at %s: %s", source.patient_id, exc.stage, exc)
        failure = failures_lib.from_exception(source.patient_id, exc, "preprocess")
        write_bytes(join(staging, f"{source.patient_id}.failed"), canonical_json(failure).encode())
        return {"ok": False, "patient": source.patient_id, "failure": failure}
    seconds = dict(result.seconds, write=stage_record(result.record, config, staged))
    outcome = {"ok": True, "patient": source.patient_id, "split": source.split, "staged": staged,
               "warnings": result.warnings, "seconds": {k: round(v, 3) for k, v in seconds.items()},
               # the scan's orientation, shape and spacing: the manifest's `geometry` summarises them
               "geometry": geometry_lib.ScanGeometry.of(result.record.affine, result.record.original_shape).to_json()}
    write_bytes(outcome_path, canonical_json(outcome).encode())  # last: marks the patient done for a resume
    log.info("patient %s done in %.1fs", source.patient_id, time.perf_counter() - start)
    return dict(outcome, resumed=False)


def stage_record(record: schema.PatientRecord, config: dict, staged: str) -> float:
    """Writes the record as it will lie in its shard (framed, compressed); returns the seconds it took.

    Compressing here, once per patient on the worker that made it, keeps
    the shards' compression out of the job's serial tail (``sharding``).
    """
    start = time.perf_counter()
    compression = PreprocessingSpec.from_config(config).compression
    write_bytes(staged, tfrecord.shard_piece(schema.encode(record), compression))
    return time.perf_counter() - start
