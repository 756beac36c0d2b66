"""A worker process killed while patients are in flight: the version still comes out byte-identical.

On a lab's Dask cluster workers are pre-empted as a matter of course; on
Dataflow a worker can be lost mid-bundle.  Each test runs the tiny cohort's
job, waits until the first patient's record is staged (the others are then
being processed), SIGKILLs the worker process that is busiest at that moment,
and requires either a completed version with the clean run's shard, manifest
and errors.jsonl bytes, or a failure with a message after which the same
command resumes to those bytes.  The Dask cluster (2 worker processes on
127.0.0.1) is started fresh for the test and always closed.
"""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time

import pytest

from tests.helpers import MULTI_PROCESS, local_dask_client, run_pipeline

OUTPUTS = ("manifest.json", "errors.jsonl")


def _files(dataset_dir: str) -> dict[str, bytes]:
    folder = pathlib.Path(dataset_dir)
    names = list(OUTPUTS) + sorted(p.name for p in folder.glob("*.tfrecord*"))
    return {name: (folder / name).read_bytes() for name in names}


def busiest(pids: list[int], window: float = 0.3) -> int:
    """The process that used the most CPU over ``window`` seconds: the one working on a patient."""
    import psutil

    procs = {pid: psutil.Process(pid) for pid in pids}
    before = {pid: sum(p.cpu_times()[:2]) for pid, p in procs.items()}
    time.sleep(window)
    return max(procs, key=lambda pid: sum(procs[pid].cpu_times()[:2]) - before[pid])


class KillWhenStaged(threading.Thread):
    """Waits for the first staged record under ``output``, then SIGKILLs the busiest of ``workers()``."""

    def __init__(self, output: pathlib.Path, workers, timeout: float = 240.0):
        super().__init__(daemon=True)
        self._output, self._workers, self._deadline = output, workers, time.monotonic() + timeout
        self.staged_at_kill: int | None = None
        self.killed: int | None = None
        self._done = threading.Event()

    def run(self):
        while not self._done.wait(0.05) and time.monotonic() < self._deadline:
            staged = list(self._output.glob("*/*/_staging/*.json"))
            pids = self._workers() if staged else []
            if pids:
                self.killed = busiest(pids)
                self.staged_at_kill = len(list(self._output.glob("*/*/_staging/*.json")))
                os.kill(self.killed, signal.SIGKILL)
                return

    def stop(self):
        self._done.set()
        self.join()


def run_through_a_kill(cohort, output: pathlib.Path, beam_args: list[str], workers):
    """Run with one worker killed mid-job; re-run once if it failed.  (summary, the failure's message or None)."""
    killer = KillWhenStaged(output, workers)
    killer.start()
    message = None
    try:
        summary = run_pipeline(cohort, output, beam_args)
    except Exception as exc:  # the runner gave up on the lost worker: it must say why, and a re-run resume
        message = f"{type(exc).__name__}: {exc}\n" + "\n".join(getattr(exc, "__notes__", []))
        assert str(exc).strip() and "Run the same command again to resume" in message, message
        summary = None
    finally:
        killer.stop()
    assert killer.killed is not None, "no worker was killed: the job ended before a record was staged"
    if summary is None:
        summary = run_pipeline(cohort, output, beam_args)
        assert summary.run["patients_resumed"] > 0, "the re-run started from scratch"
    print(f"killed pid {killer.killed} with {killer.staged_at_kill} record(s) staged: "
          + ("the job completed" if message is None else f"the job failed, the re-run resumed:\n{message}"))
    return summary, message, killer


def _sdk_workers() -> list[int]:
    """FnApiRunner's multi-process workers: this process's ``sdk_worker_main`` children."""
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)
            if "sdk_worker_main" in " ".join(p.cmdline())]


# The killed worker's gRPC reader threads die with it, by design of the test: not a finding.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_fnapi_multi_process_survives_a_killed_worker(tiny_cohort, tiny_dataset, tmp_path):
    summary, message, killer = run_through_a_kill(tiny_cohort, tmp_path, MULTI_PROCESS, _sdk_workers)
    assert killer.staged_at_kill < 6, "every patient was done before the kill"
    assert summary.version_id == tiny_dataset.version_id, message
    assert _files(summary.dataset_dir) == _files(tiny_dataset.dataset_dir), message


@pytest.fixture
def dask_cluster():
    """A fresh 2-worker LocalCluster on 127.0.0.1 for one test, always closed."""
    with local_dask_client() as client:
        yield client


def test_dask_survives_a_killed_worker(tiny_cohort, tiny_dataset, dask_cluster, tmp_path):
    pids = list(dask_cluster.run(os.getpid).values())
    args = ["--runner=DaskRunner", f"--dask_client_address={dask_cluster.scheduler.address}",
            "--dask_partition_size=1"]
    summary, message, killer = run_through_a_kill(tiny_cohort, tmp_path, args, lambda: pids)
    assert killer.staged_at_kill < 6, "every patient was done before the kill"
    assert summary.version_id == tiny_dataset.version_id, message
    assert _files(summary.dataset_dir) == _files(tiny_dataset.dataset_dir), message
