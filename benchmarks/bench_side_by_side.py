r"""One patient's preprocessing in plain processes, alone and two side by side: wall and CPU seconds, as JSON.

    python benchmarks/bench_side_by_side.py [--rounds=6] [--workdir=bench_data] [--idle_wait_s=30]

Why: the Beam job's 1 -> 2 worker scaling (``bench_preprocess.py``) mixes
three costs.  This measures the first with no Beam at all: how much two
patients on two cores slow each other down.  It also shows whether a patient
on "one core" (``preprocess(..., threads=1)``, what a Beam worker runs) uses
more than one: CPU seconds above wall seconds mean extra threads (BLAS,
OpenMP) are running beside it.

Each process preprocesses the same 240x240x155 synthetic patient
(``configs/preprocess/brats2020.py``: the 144^3 box, N4 on four channels)
``--rounds`` times; the first round (imports, antspyx loading) is dropped.
Phases: one process alone, then two processes at once.  Reported per phase:
the median wall and CPU seconds of a patient (CPU of the whole process, all
its threads: ``time.process_time``), and the side-by-side / alone ratio of
the wall medians.  Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

SHAPE = (240, 240, 155)
PATIENT = "BraTS20_Training_001"
log = common.make_log("bench-side-by-side")


def child(cohort: str, rounds: int) -> None:
    """Preprocess the patient ``rounds`` times; print [[wall, cpu], ...] (this runs in each measured process)."""
    from benchmarks.bench_preprocess import patient_files
    from configs.preprocess import brats2020
    from preprocessing.discovery import PatientSource
    from preprocessing.patient import preprocess

    cfg = brats2020.get_config().to_dict()
    source = PatientSource(PATIENT, "HGG", patient_files(cohort, PATIENT), {})
    times = []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        preprocess(source, cfg, threads=1)
        times.append([time.perf_counter() - wall, time.process_time() - cpu])
    print(json.dumps(times))


def run_processes(cohort: str, rounds: int, count: int) -> list[list[list[float]]]:
    """Start ``count`` measuring processes at once; each one's per-round [wall, cpu]."""
    command = [sys.executable, os.path.abspath(__file__), "--child", f"--cohort={cohort}", f"--rounds={rounds}"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, cwd=ROOT) for _ in range(count)]
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a measuring process failed: exit codes {[p.returncode for p in procs]}")
    return [json.loads(out.decode().strip().splitlines()[-1]) for out in outputs]


def phase(per_process: list[list[list[float]]]) -> dict:
    kept = [r for rounds in per_process for r in rounds[1:]]  # the first round pays the imports
    return {"patients_timed": len(kept), "wall_s_median": round(statistics.median(r[0] for r in kept), 3),
            "cpu_s_median": round(statistics.median(r[1] for r in kept), 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="patients per process, the first not timed (default 6)")
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench_data"), help="where the cohort is kept")
    parser.add_argument("--idle_wait_s", type=float, default=30, help="wait up to this for idle cores before a phase")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cohort", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.cohort, args.rounds)
        return 0

    from benchmarks.bench_preprocess import ensure_cohort

    cohort = ensure_cohort(os.path.join(args.workdir, "side_by_side"), 1, SHAPE, seed=0, compressed=True)
    report = {"benchmark": "bench_side_by_side", "shape": list(SHAPE), "rounds_per_process": args.rounds}
    for name, count in (("alone", 1), ("side_by_side", 2)):
        common.wait_for_idle(args.idle_wait_s, log)
        log(f"{name}: {count} process(es) x {args.rounds} rounds")
        report[name] = phase(run_processes(cohort, args.rounds, count))
    report["side_by_side_wall_ratio"] = round(report["side_by_side"]["wall_s_median"]
                                              / report["alone"]["wall_s_median"], 3)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
