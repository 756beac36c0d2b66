r"""Seconds per batch of the training input pipeline of a training config on a dataset, as JSON.

    python benchmarks/bench_train_input.py --data_dir=demo_data/datasets/synthetic/<version_id>
    python benchmarks/bench_train_input.py --data_dir=... --config=configs/train/unet3d.py --batches=20

Only the ``tf.data`` pipeline runs (``trainer.data.train_dataset`` as the
trainer builds it: cache, patch, augmentation, batching), no model: what the
input costs the trainer per step.  The first batch (tracing, XLA compilation)
is reported apart.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402


def load_config(path: str):
    spec = importlib.util.spec_from_file_location("bench_config", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="a dataset version folder (manifest.json and shards)")
    parser.add_argument("--config", default="configs/train/tiny_cpu.py", help="training config file (default: the demo's)")
    parser.add_argument("--batches", type=int, default=75, help="timed batches after the first (default 75)")
    args = parser.parse_args(argv)

    from trainer import augment as augment_lib, data

    cfg = load_config(args.config)
    info = data.open_dataset(args.data_dir)
    aug = augment_lib.AugmentConfig.from_config(cfg)
    ds = data.train_dataset(info, int(cfg.batch_size), aug, seed=int(cfg.seed), cache=bool(cfg.data.cache),
                            samples_per_epoch=int(cfg.steps_per_epoch) * int(cfg.batch_size))
    batches = iter(ds)
    start = time.perf_counter()
    next(batches)
    first = time.perf_counter() - start
    cpu, start = common.rusage_cpu(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.batches):
        next(batches)
    wall = time.perf_counter() - start
    cpu = common.rusage_cpu(resource.RUSAGE_SELF) - cpu
    print(json.dumps({"benchmark": "bench_train_input", "config": args.config, "data_dir": args.data_dir,
                      "batch_size": int(cfg.batch_size), "patch_size": list(aug.patch_size), "xla": aug.xla,
                      "first_batch_s": round(first, 2), "timed_batches": args.batches,
                      "seconds_per_batch": round(wall / args.batches, 4),
                      "cpu_seconds_per_batch": round(cpu / args.batches, 4)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
