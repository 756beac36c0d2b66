r"""A job's wall time split into serial parts and per-patient work, measured; the model's inputs as JSON.

    nice python benchmarks/bench_scale.py [--patients=12,24,48] [--workers=1,2] [--shape=96,96,80]
        [--big_shape=240,240,155] [--big_patients=4] [--workdir=bench_data/scale]

Why: scaling past two cores can only be predicted here, on paper, from what
two cores show.  Each run is the real command's job (FnApiRunner,
multi-process, ``--direct_num_workers=W``) on a synthetic cohort, in a fresh
process, with a timeline: the process start (t=0), the moment the launcher
has discovered, fingerprinted and split the cohort ("planned"), the moment
each patient's record was staged (its file's mtime under ``_staging/``), and
the moment the launcher returned with the manifest written.  From it:

- ``launch_s``: start -> planned (imports, discovery, checksums, splits);
- ``startup_s``: planned -> first record staged, less one patient's time
  (pipeline construction, worker processes starting, the first bundle);
- ``per_patient_s``: the mean gap between records staged on one worker
  (W x (last - first) / (N - W));
- ``manifest_s``: last record staged -> returned (GroupByKey, shard joins,
  manifest, runner shutdown).

``--big_shape`` runs a few full-size patients on one worker for the
per-patient seconds the prediction uses.  The fits (launch and manifest
against N; start-up and per patient by W) and the prediction live in
``benchmarks/scale_model.py``; this script prints both.  Progress on stderr.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common, scale_model  # noqa: E402

log = common.make_log("bench-scale")
# A Dataflow worker VM's boot and container start, assumed (not measurable offline): minutes, per the Dataflow docs.
VM_BOOT_S = 180.0


def config(shape: tuple[int, int, int]) -> dict:
    """The demo's config for small volumes (64^3 centred crop, N4 shrink 4); brats2021's at full size."""
    from configs.preprocess import brats2021, synthetic_small

    if shape == (240, 240, 155):
        cfg = brats2021.get_config()
        cfg.runtime.isolate = False
        return cfg.to_dict()
    cfg = synthetic_small.get_config()
    cfg.crop.size = (64, 64, 64)
    cfg.n4.shrink_factor = 4
    return cfg.to_dict()


class StagedWatcher:
    """Collects the mtime of every staged record while the job runs (the files go when it ends)."""

    def __init__(self, output_dir: str, period: float = 0.1):
        self._pattern = os.path.join(output_dir, "*", "*", "_staging", "*.json")
        self.times: dict[str, float] = {}
        self._stop, self._period = threading.Event(), period
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.wait(self._period):
            for name in glob.glob(self._pattern):
                try:
                    self.times.setdefault(name, os.stat(name).st_mtime)
                except OSError:
                    pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def child(cohort: str, output: str, workers: int, shape: tuple[int, int, int], t0: float) -> None:
    """Run the job on ``workers`` processes; print its timeline (seconds since ``t0``) as JSON."""
    from beam_pipeline import launch

    marks = {"imported": time.time()}

    def echo(message: str) -> None:
        if "patients to process" in message:
            marks["planned"] = time.time()

    args = ["--runner=FnApiRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    with StagedWatcher(output) as watcher:
        summary = launch.run(config(shape), cohort, output, args, echo=echo)
    marks["returned"] = time.time()
    assert not summary.failures and not summary.already_complete, summary.failures
    print(json.dumps({**{k: round(v - t0, 2) for k, v in marks.items()},
                      "staged": sorted(round(t - t0, 2) for t in watcher.times.values())}))


def ensure_cohort(workdir: str, patients: int, shape: tuple[int, int, int]) -> str:
    """A synthetic cohort of ``patients`` at ``shape`` in the layout :func:`config` reads (written once, reused)."""
    from synthetic import cohort as synthetic

    challenge = config(shape)["layout"]
    folder = os.path.join(workdir, f"cohort_{patients}_{'x'.join(map(str, shape))}_{challenge}")
    marker = os.path.join(folder, ".complete")
    if not os.path.exists(marker):
        log(f"writing {patients} patients at {shape} ({challenge})")
        synthetic.write_cohort(folder, patients, shape=shape, seed=7, challenge=challenge)
        open(marker, "w").close()
    return folder


def measured(workdir: str, patients: int, workers: int, shape: tuple[int, int, int]) -> dict:
    """:func:`measure`, kept in ``<workdir>/runs.jsonl`` so an interrupted benchmark reuses what it measured."""
    path, key = os.path.join(workdir, "runs.jsonl"), [patients, workers, list(shape)]
    if os.path.exists(path):
        with open(path) as handle:
            for line in handle:
                run = json.loads(line)
                if [run["patients"], run["workers"], run["shape"]] == key:
                    log(f"reusing the measurement of {patients} patients on {workers} worker(s)")
                    return run
    run = measure(workdir, patients, workers, shape)
    with open(path, "a") as handle:
        handle.write(json.dumps(run) + "\n")
    return run


def measure(workdir: str, patients: int, workers: int, shape: tuple[int, int, int]) -> dict:
    """One fresh process running the job; its timeline and the parts it splits into."""
    cohort = ensure_cohort(workdir, patients, shape)
    output = os.path.join(workdir, f"out_{time.time_ns()}")
    others = common.OtherProcesses()
    t0 = time.time()
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", f"--cohort={cohort}",
                           f"--output={output}", f"--workers={workers}", f"--shape={','.join(map(str, shape))}",
                           f"--t0={t0}"], capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"N={patients} W={workers} failed:\n{done.stderr[-3000:]}")
    timeline = json.loads(done.stdout.strip().splitlines()[-1])
    return {"patients": patients, "workers": workers, "shape": list(shape), "wall_s": timeline["returned"],
            **scale_model.split_timeline(timeline, patients, workers), "timeline": timeline,
            "other_processes_cpu_s": others.cpu_s()}


def parse_shape(text: str) -> tuple[int, int, int]:
    return tuple(int(v) for v in text.replace("x", ",").split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", default="12,24,48")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--shape", default="96,96,80")
    parser.add_argument("--big_shape", default="240,240,155")
    parser.add_argument("--big_patients", type=int, default=4)
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench_data", "scale"))
    parser.add_argument("--idle_wait_s", type=float, default=30.0)
    for hidden in ("--cohort", "--output", "--t0"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.cohort, args.output, int(args.workers), parse_shape(args.shape), float(args.t0))
    os.makedirs(args.workdir, exist_ok=True)
    waited = common.wait_for_idle(args.idle_wait_s, log)
    big = None
    if args.big_patients:
        log(f"{args.big_patients} patients at {args.big_shape} on 1 worker")
        big = measured(args.workdir, args.big_patients, 1, parse_shape(args.big_shape))
    runs = []
    for n in (int(v) for v in args.patients.split(",")):
        for w in (int(v) for v in args.workers.split(",")):
            log(f"{n} patients on {w} worker(s)")
            runs.append(measured(args.workdir, n, w, parse_shape(args.shape)))
    inputs = scale_model.fit(runs, big)
    print(json.dumps({"runs": runs, "big": big, "model_inputs": inputs,
                      "prediction": scale_model.predict(inputs),
                      "prediction_with_vm_boot": scale_model.predict(inputs, vm_boot_s=VM_BOOT_S),
                      "vm_boot_s_assumed": VM_BOOT_S, "check": scale_model.holdout(runs),
                      "waited_for_idle_s": waited, "contention_note": common.OtherProcesses.NOTE}, indent=1))


if __name__ == "__main__":
    main()
