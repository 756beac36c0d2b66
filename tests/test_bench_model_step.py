"""benchmarks/bench_model_step.py: the per-step CPU comparison BUILD_NOTES quotes for the model variants."""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("bench_model_step", ROOT / "benchmarks" / "bench_model_step.py")
bench_model_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_model_step)


def test_variants_parse_in_order_and_bad_ones_are_named():
    variants = bench_model_step.parse_variants(bench_model_step.DEFAULT_VARIANTS)
    assert variants == {"two_convs": {"full_resolution_convs": 2}, "one_conv": {"full_resolution_convs": 1}}
    with pytest.raises(ValueError, match="NAME=JSON"):
        bench_model_step.parse_variants('{"full_resolution_convs": 1}')
    with pytest.raises(ValueError, match="JSON object"):
        bench_model_step.parse_variants("a=[1]")


def test_a_measurement_builds_the_recipe_model_with_the_override():
    pytest.importorskip("tensorflow")
    two = bench_model_step.measure({"full_resolution_convs": 2}, steps=1)
    one = bench_model_step.measure({"full_resolution_convs": 1}, steps=1)
    assert one["params"] < two["params"]
    assert one["cpu_ms_per_step"] > 0 and two["wall_ms_per_step"] > 0
