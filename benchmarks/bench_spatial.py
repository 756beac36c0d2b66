"""CPU cost of each augmentation transform on one patch (trainer.augment.augment).

    python benchmarks/bench_spatial.py [--channels=4] [--repeats=5] [--transforms=plain,rotate,...] [--projective_pass]

One synthetic 144^3 x ``--channels`` float16 volume (smooth image, one-hot
uint8 mask of 4 classes, as the records store them); for every transform, the
training ``augment`` with a 128^3 patch, the default flips and intensity, and
that transform at probability 1 (``plain``: none of them; ``spatial``:
rotation + scaling + elastic at once), traced once as a ``tf.function`` as
tf.data does.  Each is run once untimed (XLA compiles), then ``--repeats``
times with a different seed each; the figure is the median CPU seconds of
this process (all threads) per patch.  Other processes' CPU during the timed
runs is reported too (near 0: a clean figure).  One JSON object goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")  # as trainer/__init__.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

TRANSFORMS = {
    "plain": {},
    "rotate": {"rotate_p": 1.0},
    "scale": {"scale_p": 1.0},
    "rotate+scale": {"rotate_p": 1.0, "scale_p": 1.0},
    "elastic": {"elastic_p": 1.0},
    "spatial": {"rotate_p": 1.0, "scale_p": 1.0, "elastic_p": 1.0},
    "noise": {"noise_p": 1.0},
    "blur": {"blur_p": 1.0},
    "brightness": {"brightness_p": 1.0},
    "contrast": {"contrast_p": 1.0},
    "lowres": {"lowres_p": 1.0},
    "gamma": {"gamma_p": 1.0},
}


def volume(shape=(144, 144, 144), channels=4, seed=0):
    """Smooth float16 image (brain-like: 0 outside a ball) and a one-hot uint8 mask of 4 blobs."""
    import numpy as np
    import tensorflow as tf

    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij"), -1)
    radius = np.linalg.norm(grid, axis=-1)
    rng = np.random.default_rng(seed)
    image = np.stack([np.sin(3 * grid @ rng.normal(size=3)) + 2 for _ in range(channels)], -1)
    image[radius > 0.95] = 0
    classes = np.digitize(np.linalg.norm(grid - 0.1, axis=-1), [0.2, 0.3, 0.45])[..., None] % 4
    mask = (classes == np.arange(4)).astype(np.uint8)
    return {"image": tf.constant(image.astype(np.float16)), "mask": tf.constant(mask)}


def measure(name: str, fields: dict, example, repeats: int) -> dict:
    import tensorflow as tf

    from trainer import augment as augment_lib

    aug = augment_lib.AugmentConfig(patch_size=(128, 128, 128), **fields)
    step = tf.function(lambda e, s: augment_lib.augment(e, s, aug), autograph=False)
    step(example, tf.constant([0, 0], tf.int32))[0].numpy()  # trace + XLA compile
    others = common.OtherProcesses()
    times = []
    for r in range(repeats):
        cpu0 = common.own_cpu()
        image, mask = step(example, tf.constant([r + 1, 7], tf.int32))
        image.numpy(), mask.numpy()
        times.append(common.own_cpu() - cpu0)
    return {"transform": name, "cpu_s_per_patch": round(statistics.median(times), 3),
            "rounds": [round(t, 3) for t in times], "other_processes_cpu_s": others.cpu_s()}


def measure_projective_pass(example, repeats: int) -> dict:
    """For comparison: one bilinear 2-D pass of ``ImageProjectiveTransformV3`` (TensorFlow's C++ kernel) over
    the float32 volume as a stack of slices, the unit of a rotation done as three 2-D passes."""
    import tensorflow as tf

    image = tf.cast(example["image"], tf.float32)
    size = tf.shape(image)[1:3]
    angle = 0.3
    transform = tf.constant([[math.cos(angle), -math.sin(angle), 10.0, math.sin(angle), math.cos(angle), -10.0,
                              0.0, 0.0]], tf.float32)

    def one_pass():
        return tf.raw_ops.ImageProjectiveTransformV3(images=image, transforms=transform, output_shape=size,
                                                      fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")

    one_pass().numpy()
    others = common.OtherProcesses()
    times = []
    for _ in range(repeats):
        cpu0 = common.own_cpu()
        one_pass().numpy()
        times.append(common.own_cpu() - cpu0)
    return {"transform": "one ImageProjectiveTransformV3 pass over the volume (reference)",
            "cpu_s_per_patch": round(statistics.median(times), 3), "rounds": [round(t, 3) for t in times],
            "other_processes_cpu_s": others.cpu_s()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--transforms", default=",".join(TRANSFORMS))
    parser.add_argument("--projective_pass", action="store_true",
                        help="also time one 2-D ImageProjectiveTransformV3 pass over the volume")
    args = parser.parse_args(argv)
    log = common.make_log("bench_spatial")
    example = volume(channels=args.channels)
    results = []
    for name in args.transforms.split(","):
        results.append(measure(name, TRANSFORMS[name], example, args.repeats))
        log(json.dumps(results[-1]))
    if args.projective_pass:
        results.append(measure_projective_pass(example, args.repeats))
        log(json.dumps(results[-1]))
    print(json.dumps({"volume": [144, 144, 144, args.channels], "patch": [128, 128, 128], "results": results,
                      "note": "CPU s of this process per patch, median over repeats; " + common.OtherProcesses.NOTE}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
