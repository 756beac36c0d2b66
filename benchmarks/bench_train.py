"""Training-step speed of the 3D U-Net presets by patch size and precision.

    python benchmarks/bench_train.py [--sizes=64,128] [--presets=seed,nnunet] [--steps=2]

Progress goes to stderr; one JSON object, the results, goes to stdout.

For every preset x cubic patch size x precision policy it builds
``trainer.model.build_unet((None, None, None, 4), preset(name))`` under
``keras.mixed_precision.set_global_policy(policy)``, compiles it with Adam
(learning rate 1e-3), ``trainer.losses.get_loss("dice_ce")``, no metrics and
``jit_compile=False`` (the trainer's default; Keras' "auto" also leaves XLA off
on a CPU-only machine), and runs ``model.train_on_batch`` on random batch-2
data (standard-normal images, one-hot float32 masks over 4 classes): one
warm-up step (tracing) and ``--steps`` timed steps.  Reported per combination:
median (and every) seconds per step, volumes/s (batch / median step time),
parameter count and the peak resident memory of the process.  The policy is
reset to float32 afterwards.

Both presets take 4 input channels (the project's default records: flair, t1,
t1ce, t2).  The seeds trained on 3 channels; only the first 3x3x3 conv
sees the difference: the seed preset has 5,646,260 parameters at 4 channels
vs the seeds' 5,645,828 at 3 (+432 = 27 x 16).

Precisions: float32 and a mixed policy: ``mixed_bfloat16`` on CPU (TF has
no float16 MaxPool3D kernel on CPU), ``mixed_float16`` where a GPU is visible.

Each combination runs in a subprocess of its own, so memory is returned
between them, and a failure (an exception such as out-of-memory or a missing
kernel, or the process being killed) is recorded as an error string instead
of ending the benchmark.

Time budget (the whole default sweep should stay near 15 minutes on 2 cores):
float32 combinations run first, then the mixed ones.  Each combination gets
``--combo_budget_s`` for its warm-up and timed steps: a timed step is only
started if it is expected to fit (so a slow combination reports fewer timed
steps, or only its warm-up time as an upper bound), and the child is killed
``KILL_MARGIN_S`` past its budget (its partial results are kept).  A
combination whose step time, predicted from the same preset and precision at
a smaller size times the voxel ratio, makes warm-up + one step overrun its
budget is skipped, and the prediction is recorded (clearly marked as not
measured), unless its memory, predicted the same way, exceeds the cap: such
a run fails fast, so it is run to record the real error.  Once
``--total_budget_s`` is spent, the rest are skipped.  Before each
combination the sweep waits (up to ``--idle_wait_s``, not counted in the
budgets) for other processes to leave the cores idle, and every row reports
the CPU seconds the rest of the machine used while it ran
(``other_processes_cpu_s``: near 0 means the timing is clean).

Memory: a child whose resident memory passes ``--memory_limit_gb`` (default
85% of MemTotal) is killed and recorded as out of memory, and every child
sets its ``oom_score_adj`` to 1000, so an overrun never reaches other
processes on the machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

BATCH = 2
CHANNELS = 4
LEARNING_RATE = 1e-3
COMBO_BUDGET_S = 300
TOTAL_BUDGET_S = 900
RSS_BASE_MB = 1000  # resident memory of a built model before its first step, about
KILL_MARGIN_S = 120  # past its budget a child is killed (build time, a step that ran long)
CPU_FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


log = common.make_log("bench_train")


# --------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------


def cpu_info() -> dict:
    """CPU model and the vector/matrix extensions that decide bfloat16 speed, from /proc/cpuinfo."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(),
            "flags": {f: f in flags for f in CPU_FLAGS_OF_INTEREST}}


def device_info() -> dict:
    """The Keras backend's devices, the CPU and library versions (no TensorFlow import under JAX)."""
    import keras

    info = {"keras_backend": keras.backend.backend(), "cpu": cpu_info(), "python": platform.python_version(),
            "keras": keras.__version__}
    if keras.backend.backend() == "jax":
        import jax

        return {**info, "physical_devices": [f"{d.platform.upper()}:{d}" for d in jax.devices()],
                "jax": jax.__version__}
    import tensorflow as tf

    return {**info, "physical_devices": [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()],
            "tensorflow": tf.__version__}


def has_gpu() -> bool:
    """A GPU visible to the Keras backend (JAX or TensorFlow)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def default_memory_limit_gb() -> float:
    """85% of MemTotal in GiB (0: unknown, no cap)."""
    try:
        with open("/proc/meminfo") as handle:
            kib = next(int(line.split()[1]) for line in handle if line.startswith("MemTotal"))
    except (OSError, StopIteration, ValueError):
        return 0.0
    return round(0.85 * kib / 2**20, 1)


def mixed_policy() -> str:
    """mixed_float16 where a GPU is visible, else mixed_bfloat16 (no float16 MaxPool3D on CPU)."""
    return "mixed_float16" if has_gpu() else "mixed_bfloat16"


# --------------------------------------------------------------------------
# One combination (runs in a child process)
# --------------------------------------------------------------------------


def random_batch(size: int, num_classes: int, seed: int = 0):
    """Standard-normal images and one-hot float32 masks, batch 2, channels-last."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, size, size, size, CHANNELS), dtype=np.float32)
    labels = rng.integers(0, num_classes, (BATCH, size, size, size))
    y = np.eye(num_classes, dtype=np.float32)[labels]
    return x, y


CHILD_FLAGS: list[str] = []  # --target/--deep_supervision, passed on to every combination's process
CHALLENGE = "brats2023_gli"  # 4 classes; 3 regions (WT, TC, ET) under --target=regions


def build_and_compile(preset_name: str, policy: str, target: str = "classes", deep_supervision: bool = False):
    """The preset's U-Net under ``policy``, compiled as the trainer does (trainer.targets) with Adam 1e-3,
    dice_ce for the target and no metrics.  Keras ops only: runs under the JAX backend too."""
    import keras

    from shared import challenges
    from trainer import targets
    from trainer.model import preset

    keras.mixed_precision.set_global_policy(policy)
    challenge = challenges.get(CHALLENGE)
    spec = targets.model_spec(preset(preset_name), target, challenge)
    model = targets.compiled_model((None, None, None, CHANNELS), spec, target, challenge, "dice_ce",
                                   keras.optimizers.Adam(learning_rate=LEARNING_RATE),
                                   deep_supervision=deep_supervision, jit_compile=False, with_metrics=False)
    return model, challenge.num_classes


def emit(result: dict) -> None:
    """One JSON line on stdout; the parent keeps the last one (partial results survive a kill)."""
    print(json.dumps(result), flush=True)


def time_steps(model, x, y, steps: int, budget_s: float, result: dict) -> dict:
    """One warm-up train_on_batch, then up to ``steps`` timed ones within ``budget_s``.

    train_on_batch returns the loss as a value, so each call is synchronous.
    A timed step is started only if the time spent so far plus the last step
    (or the warm-up, which also traces the graph, for the first) fits the
    budget; with none timed, the warm-up time is an upper bound on a step.
    """
    start = time.perf_counter()
    model.train_on_batch(x, y)
    result["warmup_step_s"] = round(time.perf_counter() - start, 3)
    result["step_s"] = []
    log(f"    warm-up step: {result['warmup_step_s']:.2f} s")
    emit(result)
    times = result["step_s"]
    while len(times) < steps:
        estimate = times[-1] if times else result["warmup_step_s"]
        if time.perf_counter() - start + estimate > budget_s:
            result["stopped_early"] = f"{len(times)} of {steps} timed steps fit the {budget_s:.0f} s budget"
            break
        t0 = time.perf_counter()
        loss = model.train_on_batch(x, y)
        times.append(round(time.perf_counter() - t0, 3))
        log(f"    step {len(times)}/{steps}: {times[-1]:.2f} s")
        result.update(summarise(times))
        result["final_loss"] = float(loss[0] if isinstance(loss, (list, tuple)) else loss)
        emit(result)
    if not times:
        result.update({"median_step_s": None, "volumes_per_s": None,
                       "note": "no timed step fit the budget; warmup_step_s (includes tracing) bounds a step from above"})
    return result


def summarise(times: list[float]) -> dict:
    """Median seconds per step and the volumes/s it gives at batch 2."""
    median = statistics.median(times)
    return {"timed_steps": len(times), "median_step_s": round(median, 3), "volumes_per_s": round(BATCH / median, 3)}


def run_one(preset_name: str, size: int, policy: str, steps: int, budget_s: float, target: str = "classes",
            deep_supervision: bool = False) -> dict:
    """Build, compile and time one combination; the policy is reset to float32 afterwards."""
    import keras

    result: dict = {"keras_backend": keras.backend.backend(), "target": target, "deep_supervision": deep_supervision}
    try:
        model, num_classes = build_and_compile(preset_name, policy, target, deep_supervision)
        x, y = random_batch(size, num_classes)
        result["parameters"] = int(model.count_params())
        time_steps(model, x, y, steps, budget_s, result)
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal: OOM, missing kernels...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        oom = [line for line in lines if "OOM" in line]
        result["error"] = f"{type(exc).__name__}: {(oom or lines or [''])[0][:500]}"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["tensorflow_imported"] = "tensorflow" in sys.modules  # False under KERAS_BACKEND=jax
    return result


def volunteer_for_oom_killer() -> None:
    """Make this process the OOM killer's first choice, so a memory overrun never hits other processes."""
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
    except OSError:
        pass


def child_main(spec: str, steps: int, budget_s: float, target: str = "classes",
               deep_supervision: bool = False) -> int:
    """Entry point of a child: time ``preset,size,policy`` and print JSON lines (the last is final)."""
    preset_name, size, policy = spec.split(",")
    volunteer_for_oom_killer()
    emit(run_one(preset_name, int(size), policy, steps, budget_s, target, deep_supervision))
    sys.stderr.flush()
    os._exit(0)  # skip TensorFlow's teardown (seconds); the result is already printed


# --------------------------------------------------------------------------
# The sweep (parent process)
# --------------------------------------------------------------------------


def last_json(text: str | bytes | None) -> dict | None:
    """The last JSON line a child printed, if any."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line for line in (text or "").splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def run_child(preset_name: str, size: int, policy: str, steps: int, budget_s: float,
              memory_limit_gb: float = 0.0) -> dict:
    """One combination in a fresh Python process; killed ``KILL_MARGIN_S`` after its budget.

    The child's stderr is passed through (its progress lines) and its tail
    kept to explain a crash.  Returns the child's last JSON line (partial
    results survive a kill), with an error string when it did not finish.
    """
    cmd = [sys.executable, os.path.abspath(__file__), f"--_child={preset_name},{size},{policy}", *CHILD_FLAGS,
           f"--steps={steps}", f"--combo_budget_s={budget_s}"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out_lines: list[str] = []
    err_tail: collections.deque = collections.deque(maxlen=20)
    pumps = [threading.Thread(target=_pump, args=(proc.stdout, out_lines.append, False), daemon=True),
             threading.Thread(target=_pump, args=(proc.stderr, err_tail.append, True), daemon=True)]
    for pump in pumps:
        pump.start()
    limit = budget_s + KILL_MARGIN_S
    killed, peak_rss = watch(proc, limit, memory_limit_gb)
    for pump in pumps:
        pump.join(timeout=10)
    result = last_json("".join(out_lines)) or {}
    result["process_wall_s"] = round(time.perf_counter() - start, 1)
    if "peak_rss_mb" in result:  # the final line: the combination finished
        return result
    result["peak_rss_mb"] = peak_rss
    if killed == "memory":
        result["error"] = (f"out of memory: killed when its resident memory passed the {memory_limit_gb} GiB cap "
                           + ("before its warm-up step finished" if "warmup_step_s" not in result
                              else f"during timed step {len(result.get('step_s', [])) + 1}"))
        return result
    if killed:
        result["error"] = (f"killed after {limit:.0f} s before its warm-up step finished" if "warmup_step_s" not in result
                           else f"killed after {limit:.0f} s during timed step {len(result.get('step_s', [])) + 1}")
        return result
    code = proc.returncode
    how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    tail = "".join(err_tail)
    if "bad_alloc" in tail or "OOM" in tail or code == -9:
        how += ": out of memory"
    last = [line.strip() for line in err_tail if line.strip() and not _noise(line)]
    result["error"] = f"child process {how}" + (f"; last stderr line: {last[-1][:300]}" if last else "")
    return result


def rss_mb(pid: int) -> int:
    """Resident memory of a process in MiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next(int(line.split()[1]) // 1024 for line in handle if line.startswith("VmRSS"))
    except (OSError, StopIteration, ValueError):
        return 0


def watch(proc, time_limit_s: float, memory_limit_gb: float) -> tuple[str, int]:
    """Waits for a child, killing it past the time limit or the resident-memory cap.

    Returns why it was killed ("time", "memory" or "") and its peak resident MiB.
    """
    deadline = time.perf_counter() + time_limit_s
    cap_mb = memory_limit_gb * 1024 if memory_limit_gb > 0 else float("inf")
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_mb(proc.pid))
        reason = "memory" if peak > cap_mb else "time" if time.perf_counter() > deadline else ""
        if reason:
            proc.kill()
            proc.wait()
            return reason, peak
        time.sleep(0.1)
    return "", peak


def _noise(line: str) -> bool:
    """TensorFlow start-up chatter that says nothing about this run."""
    return any(k in line for k in ("cuda", "cuInit", "absl::InitializeLog", "oneDNN custom operations"))


def _pump(stream, keep, echo: bool) -> None:
    """Reads a child's stream line by line, keeping each and echoing useful ones to our stderr."""
    for line in stream:
        keep(line)
        if echo and not _noise(line):
            sys.stderr.write(line)
            sys.stderr.flush()


def predicted_step(results: list[dict], preset_name: str, size: int, policy: str) -> tuple[float, int] | None:
    """Step time at ``size`` scaled from the largest smaller size measured (same preset and policy).

    A U-Net's work grows with the voxel count, so the step time is scaled by
    (size / measured size)^3; returns (seconds, measured size) or None.
    """
    smaller = [r for r in results if r["preset"] == preset_name and r["precision"] == policy
               and r["patch"] < size and r.get("median_step_s")]
    if not smaller:
        return None
    ref = max(smaller, key=lambda r: r["patch"])
    return ref["median_step_s"] * (size / ref["patch"]) ** 3, ref["patch"]


def predicted_rss_mb(results: list[dict], preset_name: str, size: int, policy: str) -> int | None:
    """Peak resident MiB at ``size`` scaled from the largest smaller size measured (same preset and policy).

    Activations grow with the voxel count on top of a fixed base (the
    interpreter, TensorFlow, weights and optimizer state: ~1 GiB here), so
    base + (peak - base) x (size / measured size)^3.
    """
    smaller = [r for r in results if r["preset"] == preset_name and r["precision"] == policy
               and r["patch"] < size and r.get("peak_rss_mb") and "warmup_step_s" in r]
    if not smaller:
        return None
    ref = max(smaller, key=lambda r: r["patch"])
    base = min(RSS_BASE_MB, ref["peak_rss_mb"])
    return int(base + (ref["peak_rss_mb"] - base) * (size / ref["patch"]) ** 3)


def sweep(presets, sizes, policies, steps: int, combo_budget_s: float, total_budget_s: float,
          memory_limit_gb: float, idle_wait_s: float = 0.0) -> list[dict]:
    """Every policy x size x preset (float32 first); progress on stderr.

    A combination is skipped, with the reason recorded, if its predicted
    warm-up + one step exceed its budget, or if the total budget is spent.
    """
    results = []
    deadline = time.perf_counter() + total_budget_s
    cap_mb = memory_limit_gb * 1024 if memory_limit_gb > 0 else float("inf")
    combos = [(p, s, q) for q in policies for s in sizes for p in presets]
    for i, (preset_name, size, policy) in enumerate(combos, 1):
        result = {"preset": preset_name, "patch": size, "precision": policy}
        results.append(result)
        tag = f"[{i}/{len(combos)}] {preset_name} {size}^3 {policy}"
        remaining = deadline - time.perf_counter() - KILL_MARGIN_S
        if remaining < 30:
            result["error"] = f"skipped, not measured: the total budget of {total_budget_s:.0f} s is spent"
            log(f"{tag}: {result['error']}")
            continue
        budget = min(combo_budget_s, remaining)
        guess = predicted_step(results, preset_name, size, policy)
        memory = predicted_rss_mb(results, preset_name, size, policy)
        if memory and memory > cap_mb:  # fails fast: run it, so the error is measured, not guessed
            result["predicted_peak_rss_mb"] = memory
            log(f"{tag}: predicted ~{memory / 1024:.0f} GiB resident, over the {memory_limit_gb} GiB cap; "
                "running it to confirm")
        elif guess and 2 * guess[0] > budget:
            result["predicted_step_s"] = round(guess[0], 1)
            result["predicted_volumes_per_s"] = round(BATCH / guess[0], 4)
            if memory:
                result["predicted_peak_rss_mb"] = memory
            result["error"] = (f"skipped, not measured: predicted ~{guess[0]:.0f} s/step ({guess[1]}^3 median x "
                               f"{(size / guess[1]) ** 3:.0f} voxels); warm-up + 1 step would exceed the "
                               f"{budget:.0f} s budget")
            log(f"{tag}: {result['error']}")
            continue
        waited = common.wait_for_idle(idle_wait_s, lambda m: log("    " + m))
        deadline += waited  # waiting for others does not count against the budget
        if waited > 5:
            result["idle_wait_s"] = waited
        log(f"{tag}: 1 warm-up + up to {steps} timed steps within {budget:.0f} s")
        others = common.OtherProcesses()
        result.update(run_child(preset_name, size, policy, steps, budget, memory_limit_gb))
        result["other_processes_cpu_s"] = others.cpu_s()
        if "error" in result:
            log(f"    failed: {result['error']}")
        elif result.get("median_step_s"):
            log(f"    median {result['median_step_s']:.2f} s/step, {result['volumes_per_s']:.3f} volumes/s, "
                f"{result['parameters']:,} parameters, peak {result['peak_rss_mb']} MB, "
                f"other processes used {result['other_processes_cpu_s']} CPU s meanwhile")
        else:
            log(f"    no timed step fit the budget (warm-up {result.get('warmup_step_s')} s)")
    return results


def precision_speedups(results: list[dict], mixed: str) -> dict:
    """float32 median step time over the mixed policy's, per preset and size (>1: mixed is faster)."""
    table = {(r["preset"], r["patch"], r["precision"]): r for r in results if r.get("median_step_s")}
    out = {}
    for (preset_name, size, policy), r in table.items():
        other = table.get((preset_name, size, mixed))
        if policy == "float32" and other:
            out[f"{preset_name}_{size}"] = round(r["median_step_s"] / other["median_step_s"], 2)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,128", help="comma-separated cubic patch sizes (default 64,128)")
    parser.add_argument("--presets", default="seed,nnunet", help="comma-separated model presets (default seed,nnunet)")
    parser.add_argument("--precisions", default="",
                        help="comma-separated Keras policies (default: float32 plus mixed_bfloat16 on CPU, "
                             "mixed_float16 on GPU)")
    parser.add_argument("--steps", type=int, default=2,
                        help="timed steps after one warm-up step (default 2, so the default sweep stays near "
                             "15 minutes on 2 cores)")
    parser.add_argument("--combo_budget_s", type=float, default=COMBO_BUDGET_S,
                        help="seconds of warm-up + timed steps per combination; fewer timed steps are run "
                             f"when they would not fit (default {COMBO_BUDGET_S})")
    parser.add_argument("--total_budget_s", type=float, default=TOTAL_BUDGET_S,
                        help=f"seconds for the whole sweep; later combinations are skipped (default {TOTAL_BUDGET_S})")
    parser.add_argument("--memory_limit_gb", type=float, default=default_memory_limit_gb(),
                        help="resident-memory cap of each combination's process in GiB, past which it is "
                             "killed and recorded as out of memory; 0 for none (default: 85%% of MemTotal)")
    parser.add_argument("--idle_wait_s", type=float, default=60,
                        help="before each combination, wait up to this long for other processes to leave the "
                             "cores idle; not counted in the budgets (default 60; 0 to skip)")
    parser.add_argument("--target", default="classes", choices=("classes", "regions"),
                        help="softmax over the 4 classes, or a sigmoid per region (WT, TC, ET) with Dice + BCE")
    parser.add_argument("--deep_supervision", action="store_true", help="auxiliary losses at lower resolutions")
    parser.add_argument("--_child", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._child:
        return child_main(args._child, args.steps, args.combo_budget_s, args.target, args.deep_supervision)
    start = time.perf_counter()
    CHILD_FLAGS[:] = [f"--target={args.target}"] + (["--deep_supervision"] if args.deep_supervision else [])
    device = device_info()
    mixed = mixed_policy()
    policies = [p for p in args.precisions.split(",") if p] or ["float32", mixed]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    presets = [p for p in args.presets.split(",") if p]
    log(f"device: {device['physical_devices']}, CPU {device['cpu']['model']} x{device['cpu']['cores']}")
    others = common.OtherProcesses()
    results = sweep(presets, sizes, policies, args.steps, args.combo_budget_s, args.total_budget_s,
                    args.memory_limit_gb, args.idle_wait_s)
    device["other_processes_cpu_s"] = others.cpu_s()
    device["other_processes_note"] = common.OtherProcesses.NOTE
    out = {
        "benchmark": "bench_train",
        "method": (f"build_unet((None,None,None,{CHANNELS}), preset) under the precision policy; Adam "
                   f"lr {LEARNING_RATE}, dice_ce loss, no metrics, jit_compile=False; train_on_batch on random "
                   f"batch-{BATCH} data (one-hot float32 masks), 1 warm-up + {args.steps} timed steps, median; "
                   "volumes/s = batch / median step; each combination in its own process"),
        "input_channels": CHANNELS,
        "channels_note": "both presets take 4 channels (the seeds used 3: +432 parameters for the seed preset, only its first conv changes)",
        "batch_size": BATCH,
        "steps": args.steps,
        "budgets": {"combo_s": args.combo_budget_s, "total_s": args.total_budget_s,
                    "memory_limit_gb": args.memory_limit_gb, "idle_wait_s": args.idle_wait_s},
        "device": device,
        "mixed_policy": mixed,
        "results": results,
        "float32_over_mixed_step_time": precision_speedups(results, mixed),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
