r"""Seconds per batch of the training input pipeline of a training config on a dataset, as JSON.

    python benchmarks/bench_train_input.py --data_dir=demo_data/datasets/synthetic/<version_id>
    python benchmarks/bench_train_input.py --data_dir=... --config=configs/train/unet3d.py --batches=20
    python benchmarks/bench_train_input.py --data_dir=... --compare_serialised_cache
    python benchmarks/bench_train_input.py --data_dir=... --compare_scan

Only the ``tf.data`` pipeline runs (``trainer.data.train_dataset`` as the
trainer builds it: cache, patch, augmentation, batching), no model: what the
input costs the trainer per step.  The first batch (tracing, XLA compilation)
is reported apart.

``--compare_serialised_cache`` also times, in the same run, the cache the
trainer had before (``data.cache`` holding serialised records: every pass
batched and permuted the whole share, and every patch parsed its record
again) and prints the ratio: what parsing once saves at full size.
``--compare_scan`` times, in the same run, the cache without each record's
tumour-voxel index (every foreground patch listed the tumour voxels of its
whole record, as before ``trainer.augment.tumour_index``) and prints the ratio
of the second of two alternating rounds (the first round, also printed, is
slowed by whichever stream the process builds first).
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
    parser.add_argument("--compare_serialised_cache", action="store_true",
                        help="also time the earlier cache of serialised records (same config) and print the ratio")
    parser.add_argument("--compare_scan", action="store_true",
                        help="also time the cache without the tumour-voxel index (a whole-record scan per "
                             "foreground patch) and print the ratio")
    args = parser.parse_args(argv)

    from trainer import augment as augment_lib, data

    cfg = load_config(args.config)
    info = data.open_dataset(args.data_dir)
    aug = augment_lib.AugmentConfig.from_config(cfg)
    samples = int(cfg.steps_per_epoch) * int(cfg.batch_size)
    ds = data.train_dataset(info, int(cfg.batch_size), aug, seed=int(cfg.seed), cache=bool(cfg.data.cache),
                            samples_per_epoch=samples)
    timing = time_batches(ds, args.batches)
    result = {"benchmark": "bench_train_input", "config": args.config, "data_dir": args.data_dir,
              "batch_size": int(cfg.batch_size), "patch_size": list(aug.patch_size), "xla": aug.xla,
              "cache": bool(cfg.data.cache), "timed_batches": args.batches, **timing}
    if args.compare_serialised_cache:
        before = time_batches(serialised_cache_stream(data, info, aug, int(cfg.batch_size), int(cfg.seed), samples),
                              args.batches)
        result["serialised_cache"] = before
        result["cpu_ratio_serialised_over_this"] = round(before["cpu_seconds_per_batch"]
                                                         / result["cpu_seconds_per_batch"], 2)
    if args.compare_scan:  # a second round of both: the process's first stream runs slow for hundreds of batches
        scanned = time_batches(scanning_stream(data, info, aug, cfg, samples), args.batches)
        result["first_round"] = {**timing, "scan_per_patch": scanned}
        result.update(time_batches(data.train_dataset(info, int(cfg.batch_size), aug, seed=int(cfg.seed), cache=True,
                                                      samples_per_epoch=samples), args.batches))
        result["scan_per_patch"] = time_batches(scanning_stream(data, info, aug, cfg, samples), args.batches)
        result["cpu_ratio_scan_over_this"] = round(result["scan_per_patch"]["cpu_seconds_per_batch"]
                                                   / result["cpu_seconds_per_batch"], 2)
    print(json.dumps(result, indent=2))
    return 0


def scanning_stream(data, info, aug, cfg, samples: int):
    """The training stream as it was before cached records carried their tumour voxels (the baseline):
    the same patches (the index draws the scan's centres), each foreground one found by a whole-record scan."""
    original = data.decoded_cache
    data.decoded_cache = lambda info_, shard=data.Shard(), pick=None: original(info_, shard)
    try:  # the cache is filled inside train_dataset, so the patch only needs to last this call
        return data.train_dataset(info, int(cfg.batch_size), aug, seed=int(cfg.seed), cache=True,
                                  samples_per_epoch=samples)
    finally:
        data.decoded_cache = original


def time_batches(ds, count: int) -> dict:
    """Seconds of the first batch (tracing, XLA, a cache's fill), then wall and CPU seconds per batch."""
    batches = iter(ds)
    start = time.perf_counter()
    next(batches)
    first = time.perf_counter() - start
    cpu, start = common.rusage_cpu(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(count):
        next(batches)
    wall = time.perf_counter() - start
    cpu = common.rusage_cpu(resource.RUSAGE_SELF) - cpu
    return {"first_batch_s": round(first, 2), "seconds_per_batch": round(wall / count, 4),
            "cpu_seconds_per_batch": round(cpu / count, 4)}


def serialised_cache_stream(data, info, aug, batch_size: int, seed: int, samples: int):
    """The training stream as ``data.cache`` built it before it held parsed records (the baseline).

    Serialised records in memory; each pass batched the whole share, permuted it and unbatched it, and every
    sample parsed its record again before the patch was cut.  The same patches and augmentation as now; its
    passes within an epoch repeated one order, as they did then.
    """
    import tensorflow as tf

    cached = data._share_records(info, data.Shard(), None, True).cache()

    def one_epoch(epoch):
        e_seed = data.epoch_seed(seed, epoch)
        whole = cached.batch(max(info.num_train, 1)).enumerate()
        one_pass = whole.map(lambda b, block: data._permuted(block, data._seed_pair(e_seed + 1, b))).unbatch()
        passes = tf.data.Dataset.counter().flat_map(lambda p: one_pass)
        return passes.take(samples).enumerate().map(
            lambda i, r: data.augment(data._parse_stored(info, r), data._sample_seed(epoch, i, seed), aug),
            num_parallel_calls=tf.data.AUTOTUNE)

    ds = tf.data.Dataset.counter().flat_map(one_epoch)
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


if __name__ == "__main__":
    sys.exit(main())
