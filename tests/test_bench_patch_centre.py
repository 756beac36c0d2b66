"""benchmarks/bench_patch_centre.py: the per-patch comparison BUILD_NOTES quotes for the tumour-voxel index."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("bench_patch_centre", ROOT / "benchmarks" / "bench_patch_centre.py")
bench_patch_centre = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_patch_centre)


def test_the_scan_and_the_index_it_compares_centre_the_same_patches():
    tf = pytest.importorskip("tensorflow")
    mask = bench_patch_centre.glioma_mask((64, 64, 64))
    assert mask.sum(axis=(0, 1, 2)).min() > 0  # every class present: a class pick has a choice to make
    fns = bench_patch_centre.variants(tf.constant(mask))
    assert sorted(fns) == ["class_index", "class_scan", "voxel_index", "voxel_scan"]
    for i in range(10):
        seed = tf.constant([1, i], tf.int32)
        for pick in ("voxel", "class"):
            np.testing.assert_array_equal(fns[f"{pick}_scan"](seed), fns[f"{pick}_index"](seed))
    timing = bench_patch_centre.time_one(fns["voxel_index"], 3, 1)
    assert timing["cpu_ms"] >= 0 and timing["wall_ms"] > 0
