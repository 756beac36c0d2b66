"""CPU per training step of the ``tiny_cpu`` recipe's model, by model variant, side by side.

    python benchmarks/bench_model_step.py [--steps=100] [--repeats=3] \
        [--variants='two_convs={"full_resolution_convs": 2};one_conv={"full_resolution_convs": 1}']

Progress goes to stderr; one JSON object, the results, goes to stdout.

What it measures is the step the recipe pays for thousands of times: the
U-Net of ``configs/train/tiny_cpu.py`` (its model spec, target, deep
supervision, loss, patch and batch size), compiled by
``trainer.targets.compiled_model`` with its training metrics, fitted on one
random batch repeated (standard-normal images, a random one-hot mask), so the
input pipeline costs nothing and only the model's forward, backward and
update remain.  Each variant overrides model fields (``trainer.model.UNetSpec``)
or, with the key ``precision``, the Keras dtype policy.

Every measurement runs in a fresh subprocess (one TensorFlow per variant, so
thread pools and caches do not carry over), and the variants alternate
``--repeats`` times so that a slow minute of the machine falls on all of
them.  Per variant: median CPU and wall milliseconds per step over the
repeats (10 warm-up steps, then ``--steps`` timed, inside one ``fit``), the
parameter count, and the ratio of the first variant's median CPU to this
one's (``speedup_vs_first``).  Each child reports the CPU the rest of the
machine used while it measured (``other_processes_cpu_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import OtherProcesses, make_log, own_cpu, wait_for_idle  # noqa: E402

log = make_log("bench_model_step")
DEFAULT_VARIANTS = 'two_convs={"full_resolution_convs": 2};one_conv={"full_resolution_convs": 1}'
WARMUP_STEPS = 10


def parse_variants(text: str) -> dict[str, dict]:
    """``name=JSON;name=JSON`` -> {name: overrides}; the first is the baseline of the ratios."""
    variants = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, body = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"a variant is NAME=JSON, got {item!r}")
        overrides = json.loads(body)
        if not isinstance(overrides, dict):
            raise ValueError(f"variant {name!r}: overrides must be a JSON object, got {body!r}")
        variants[name.strip()] = overrides
    if not variants:
        raise ValueError("no variants given")
    return variants


def measure(overrides: dict, steps: int) -> dict:
    """One variant's warm step cost in this process (the child's work)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from configs.train import tiny_cpu
    from shared import challenges
    from trainer import model as model_lib
    from trainer import targets

    overrides = dict(overrides)
    keras.mixed_precision.set_global_policy(overrides.pop("precision", "float32"))
    cfg = tiny_cpu.get_config()
    challenge = challenges.get("brats2020")
    spec = targets.model_spec(model_lib.spec_from_config({**cfg.model.to_dict(), **overrides}),
                              cfg.target, challenge)
    net = targets.compiled_model((None, None, None, 4), spec, cfg.target, challenge, cfg.loss,
                                 keras.optimizers.Adam(cfg.optimizer.learning_rate),
                                 deep_supervision=cfg.deep_supervision)
    rng = np.random.default_rng(0)
    shape = (cfg.batch_size, *cfg.patch_size)
    image = rng.standard_normal((*shape, 4)).astype("float32")
    mask = np.eye(challenge.num_classes, dtype="float32")[rng.integers(0, challenge.num_classes, shape)]
    batches = tf.data.Dataset.from_tensors((image, mask)).repeat()
    net.fit(batches, epochs=1, steps_per_epoch=WARMUP_STEPS, verbose=0)
    others = OtherProcesses()
    cpu0, wall0 = own_cpu(), time.perf_counter()
    net.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0)
    cpu, wall = own_cpu() - cpu0, time.perf_counter() - wall0
    return {"cpu_ms_per_step": round(1000 * cpu / steps, 1), "wall_ms_per_step": round(1000 * wall / steps, 1),
            "params": int(net.count_params()), "other_processes_cpu_s": others.cpu_s()}


def run_child(overrides: dict, steps: int) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(overrides),
                          f"--steps={steps}"], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode:
        raise RuntimeError(f"child failed for {overrides}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help="NAME=JSON model overrides (and 'precision'), ';'-separated; the first is the baseline")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per variant, alternating")
    parser.add_argument("--idle_wait_s", type=float, default=60, help="wait this long at most for an idle machine")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(json.loads(args.child), args.steps)))
        return
    variants = parse_variants(args.variants)
    wait_for_idle(args.idle_wait_s, log)
    rows: dict[str, list[dict]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, overrides in variants.items():
            rows[name].append(run_child(overrides, args.steps))
            log(f"repeat {repeat + 1}/{args.repeats} {name}: {rows[name][-1]}")
    results = {}
    for name, runs in rows.items():
        results[name] = {"overrides": variants[name],
                         "cpu_ms_per_step": statistics.median(r["cpu_ms_per_step"] for r in runs),
                         "wall_ms_per_step": statistics.median(r["wall_ms_per_step"] for r in runs),
                         "params": runs[0]["params"], "runs": runs}
    first = results[next(iter(results))]["cpu_ms_per_step"]
    for row in results.values():
        row["speedup_vs_first"] = round(first / row["cpu_ms_per_step"], 2)
    print(json.dumps({"steps": args.steps, "repeats": args.repeats, "warmup_steps": WARMUP_STEPS,
                      "note": OtherProcesses.NOTE, "variants": results}, indent=2))


if __name__ == "__main__":
    main()
