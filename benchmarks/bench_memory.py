r"""Peak resident memory of one Beam worker per patient, by grid and ``runtime.isolate``, as JSON.

    nice python benchmarks/bench_memory.py [--cases=brats240,mni,menrt] [--workdir=bench_data/memory]

Why: the README sizes workers from this figure; before it was a guess
("about 1.5 GB at 240x240x155").  Each case is a one-patient synthetic
cohort run through the real job on one worker (in-process FnApiRunner), in a
fresh process, with ``runtime.isolate`` on (the patient runs in a forkserver
subprocess) and off (in the worker itself):

- ``brats240``: 240x240x155 at 1 mm, BraTS 2021 config (the seeds' 144^3 box);
- ``mni``: 182x218x182 at 1 mm, the MNI152 grid of BraTS 2024 GLI (its config);
- ``menrt``: 512x512x200 at 0.5 mm, the MEN-RT challenge config (T1c only,
  native grid), resampled to 1 mm before the centred 144^3 crop.

The parent watches the measured process and all its descendants every 20 ms
and reports each one's peak resident memory as the kernel keeps it (VmHWM,
exact), their sum (an upper bound on what the worker's machine must hold at
once), the peak of the sampled summed RSS (a lower bound: a spike shorter than
20 ms is missed), and the measured process's resident memory after imports,
before the job (the baseline every worker pays once).  Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

# name: (challenge, shape, spacing mm, config spec)
CASES = {
    "brats240": ("brats2021", (240, 240, 155), (1.0, 1.0, 1.0), "configs/preprocess/brats2021.py"),
    "mni": ("brats2024_gli", (182, 218, 182), (1.0, 1.0, 1.0), "brats2024_gli"),
    "menrt": ("brats2024_men_rt", (512, 512, 200), (0.5, 0.5, 0.5), "brats2024_men_rt"),
}
log = common.make_log("bench-memory")


def config_for(spec: str, isolate: bool) -> dict:
    """The case's preprocessing config as a dict, with ``runtime.isolate`` set."""
    if spec.endswith(".py"):
        from configs.preprocess import brats2021
        cfg = brats2021.get_config()
    else:
        from configs.preprocess import challenge
        cfg = challenge.get_config(spec)
    cfg.runtime.isolate = isolate
    return cfg.to_dict()


def rss_mb() -> float:
    """This process's resident memory now, MB."""
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def child(case: str, cohort: str, output: str, isolate: bool) -> None:
    """Run the one-patient job on one in-process worker; print baseline and ru_maxrss (MB) as JSON."""
    import resource

    from beam_pipeline import launch

    cfg = config_for(CASES[case][3], isolate)
    baseline = rss_mb()
    start = time.perf_counter()
    summary = launch.run(cfg, cohort, output, ["--runner=FnApiRunner"], echo=lambda *_: None)
    wall = time.perf_counter() - start
    assert sum(summary.patients.values()) == 1, summary.failures
    print(json.dumps({"baseline_mb": round(baseline, 1), "wall_s": round(wall, 1),
                      "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "n4_s": summary.run.get("stage_seconds", {}).get("n4", {}).get("mean")}))


def high_water_mb(pid: int) -> float:
    """A process's peak resident memory so far (the kernel's VmHWM), MB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def sample_tree(proc: subprocess.Popen, period: float = 0.02) -> dict:
    """Until ``proc`` exits: peak MB of the tree's summed RSS (sampled) and each process's VmHWM (exact)."""
    import psutil

    root, peak_sum, hwm = psutil.Process(proc.pid), 0.0, {}
    while proc.poll() is None:
        try:
            members = [root] + root.children(recursive=True)
        except psutil.Error:
            break
        total = 0
        for p in members:
            try:
                total += p.memory_info().rss
                seen = hwm.get(p.pid) or (" ".join(p.cmdline()[1:4])[:80], 0.0)
                hwm[p.pid] = (seen[0], max(seen[1], high_water_mb(p.pid)))
            except psutil.Error:
                pass
        peak_sum = max(peak_sum, total / 2**20)
        time.sleep(period)
    by_process = sorted(((round(mb, 1), what) for what, mb in hwm.values() if mb), reverse=True)
    return {"peak_tree_rss_sampled_mb": round(peak_sum, 1), "high_water_by_process_mb": by_process,
            "high_water_sum_mb": round(sum(mb for mb, _ in by_process), 1)}


def measure(case: str, workdir: str, isolate: bool) -> dict:
    """One fresh process running the case; its tree's peaks and its own report."""
    cohort = ensure_cohort(case, workdir)
    output = os.path.join(workdir, f"out_{case}_{int(isolate)}_{time.time_ns()}")
    command = [sys.executable, os.path.abspath(__file__), "--child", f"--cases={case}", f"--cohort={cohort}",
               f"--output={output}", f"--isolate={int(isolate)}"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peaks = sample_tree(proc)
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{case} isolate={isolate} failed (exit {proc.returncode})")
    report = json.loads(out.strip().splitlines()[-1])
    return {"isolate": isolate, **peaks, **report}


def ensure_cohort(case: str, workdir: str) -> str:
    """Write the case's one-patient cohort once (reused across runs)."""
    from synthetic import cohort as synthetic

    challenge, shape, spacing, _ = CASES[case]
    folder = os.path.join(workdir, f"cohort_{case}")
    marker = os.path.join(folder, ".done")
    if not os.path.exists(marker):
        log(f"writing the {case} patient ({'x'.join(map(str, shape))} at {spacing[0]} mm)")
        synthetic.write_cohort(folder, 1, shape=shape, seed=1, challenge=challenge, spacing=spacing)
        open(marker, "w").close()
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--workdir", default=os.path.join(ROOT, "bench_data", "memory"))
    parser.add_argument("--idle_wait_s", type=float, default=30.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cohort", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--isolate", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.cases, args.cohort, args.output, bool(args.isolate))
    results, others = {}, common.OtherProcesses()
    waited = common.wait_for_idle(args.idle_wait_s, log)
    others.restart()
    for case in args.cases.split(","):
        for isolate in (False, True):
            log(f"{case} isolate={isolate}")
            results.setdefault(case, {"challenge": CASES[case][0], "shape": CASES[case][1],
                                      "spacing_mm": CASES[case][2], "runs": []})["runs"].append(
                measure(case, args.workdir, isolate))
    print(json.dumps({"cases": results, "waited_for_idle_s": waited, "other_processes_cpu_s": others.cpu_s(),
                      "other_processes_note": common.OtherProcesses.NOTE}, indent=1))


if __name__ == "__main__":
    main()
