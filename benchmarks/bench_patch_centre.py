"""CPU per patch of centring a training patch on a tumour voxel: the whole-volume scan vs the cached index.

    python benchmarks/bench_patch_centre.py [--patches=200] [--repeats=3] [--shape=160,192,160]

Progress goes to stderr; one JSON object, the results, goes to stdout.

What it measures is ``trainer.augment._patch_start`` with every patch centred
on tumour (foreground share 1), on one full-size one-hot mask (a nested
synthetic glioma: oedema around a core around an enhancing rim, about 100,000
tumour voxels, the size of the hard cohort's), for each ``foreground_pick``:

* ``scan``: the tumour voxels listed from the whole volume for each patch,
  as every patch did before records were cached with their index;
* ``index``: drawn from ``trainer.augment.tumour_index``, listed once, as a
  cached record (``data.cache``) carries it.

Both draw the same centres (``tests/trainer/test_augment.py``).  The four
variants alternate ``--repeats`` times in this process, each a compiled
``tf.function`` warmed up once; per variant the median CPU and wall
milliseconds per patch, and ``speedup`` = scan CPU / index CPU of that pick.
The recipe centres half its patches on tumour, two patches a step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import OtherProcesses, make_log, own_cpu, wait_for_idle  # noqa: E402

log = make_log("bench_patch_centre")
PATCH = (32, 32, 32)


def glioma_mask(shape: tuple[int, int, int]):
    """A one-hot (background, NCR, ED, ET) mask: nested spheres at the volume's centre."""
    import numpy as np

    grid = np.indices(shape).astype(np.float32)
    radius = np.sqrt(sum((g - s / 2.0) ** 2 for g, s in zip(grid, shape)))
    classes = np.zeros(shape, np.uint8)
    classes[radius < 29] = 2  # oedema
    classes[radius < 17] = 3  # enhancing rim
    classes[radius < 13] = 1  # necrotic core
    return (classes[..., None] == np.arange(4)).astype(np.uint8)


def variants(mask) -> dict:
    """name -> a compiled function of the seed returning the patch start."""
    import tensorflow as tf

    from trainer import augment as augment_lib

    out = {}
    for pick in ("voxel", "class"):
        index = augment_lib.tumour_index(mask, pick)
        out[f"{pick}_scan"] = tf.function(
            lambda seed, p=pick: augment_lib._patch_start(mask, PATCH, 1.0, seed, p))
        out[f"{pick}_index"] = tf.function(
            lambda seed, p=pick, i=index: augment_lib._patch_start(mask, PATCH, 1.0, seed, p, index=i))
    return out


def time_one(fn, patches: int, first: int) -> dict:
    import tensorflow as tf

    cpu0, wall0 = own_cpu(), time.perf_counter()
    for i in range(patches):
        fn(tf.constant([first, i], tf.int32)).numpy()
    cpu, wall = own_cpu() - cpu0, time.perf_counter() - wall0
    return {"cpu_ms": 1000 * cpu / patches, "wall_ms": 1000 * wall / patches}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=int, default=200, help="timed patch centres per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per variant, alternating")
    parser.add_argument("--shape", default="160,192,160", help="mask shape (the hard cohort's brain crop)")
    parser.add_argument("--idle_wait_s", type=float, default=60, help="wait this long at most for an idle machine")
    args = parser.parse_args(argv)
    import tensorflow as tf

    shape = tuple(int(s) for s in args.shape.split(","))
    mask = tf.constant(glioma_mask(shape))
    fns = variants(mask)
    for fn in fns.values():
        fn(tf.constant([0, 0], tf.int32)).numpy()  # trace and warm up
    wait_for_idle(args.idle_wait_s, log)
    others = OtherProcesses()
    rows: dict[str, list[dict]] = {name: [] for name in fns}
    for repeat in range(args.repeats):
        for name, fn in fns.items():
            rows[name].append(time_one(fn, args.patches, repeat + 1))
        measured = ", ".join(f"{n} {r[-1]['cpu_ms']:.2f} ms" for n, r in rows.items())
        log(f"repeat {repeat + 1}/{args.repeats}: {measured}")
    results = {name: {key: round(statistics.median(r[key] for r in runs), 3) for key in ("cpu_ms", "wall_ms")}
               for name, runs in rows.items()}
    for pick in ("voxel", "class"):
        results[f"{pick}_index"]["speedup"] = round(
            results[f"{pick}_scan"]["cpu_ms"] / max(results[f"{pick}_index"]["cpu_ms"], 1e-6), 1)
    print(json.dumps({"shape": list(shape), "patch": list(PATCH), "patches": args.patches, "repeats": args.repeats,
                      "tumour_voxels": int(mask.numpy()[..., 1:].sum()), "per_patch": results,
                      "other_processes_cpu_s": others.cpu_s(), "note": OtherProcesses.NOTE}, indent=2))


if __name__ == "__main__":
    main()
