"""The preprocessing spec: one reading of a config's shapes for every package."""

import pytest

from configs.preprocess import default, synthetic_small
from shared.spec import PreprocessingSpec


def test_the_default_bbox_crop_has_no_one_shape_and_bounds_the_record_by_the_grid():
    bbox = PreprocessingSpec.from_config(default.get_config().to_dict())  # the default: the brain's box
    assert bbox.crop_mode == "bbox" and bbox.crop_shape is None and bbox.shape_multiple == 16
    assert bbox.describe_crop() == "brain bounding box + 8, multiple of 16 (at least 64x64x64)"
    assert bbox.min_source_shape == (1, 1, 1)  # the box pads wherever the scan is smaller
    # 240x240x155 + 2 x 8, rounded up to 16: no brain on the grid makes a larger record
    assert bbox.max_record_shape() == (256, 256, 176)
    assert bbox.record_bytes() == 256 * 256 * 176 * (2 * 4 + 4) + 4096
    native = default.get_config()
    native.layout = "brats2024_men_rt"
    assert PreprocessingSpec.from_config(native.to_dict()).max_record_shape() == (272, 272, 272)
    for field, value in (("margin", -1), ("multiple", 0), ("min_size", (64, 64))):
        bad = default.get_config()
        bad.crop[field] = value
        with pytest.raises(ValueError, match="bbox"):
            PreprocessingSpec.from_config(bad.to_dict())


def test_fixed_and_centred_crops_give_the_record_shape_and_the_grid_they_need():
    named = default.get_config()
    named.crop.mode = "brain"  # one shape around the brain, by name
    brain = PreprocessingSpec.from_config(named.to_dict())
    assert brain.crop_shape == (160, 192, 160) and brain.shape_multiple is None
    seeds = default.get_config()
    seeds.crop.mode = "fixed"  # the seeds' box, by name
    fixed = PreprocessingSpec.from_config(seeds.to_dict())
    assert fixed.crop_shape == (144, 144, 144) and fixed.min_source_shape == (192, 192, 149)
    assert fixed.describe_crop() == "box 48:192 x 48:192 x 5:149"
    assert fixed.record_bytes() == 144 ** 3 * (2 * 4 + 4) + 4096
    small = synthetic_small.get_config()
    small.crop.mode = "centered"  # datasets made before the brain crop had this name
    centred = PreprocessingSpec.from_config(small.to_dict())
    assert centred.crop_shape == centred.min_source_shape == (48, 48, 48)
    assert centred.compression == "GZIP" and centred.label_convention == "brats2020"


def test_a_bad_crop_mode_layout_or_compression_is_refused():
    for field, value in (("crop.mode", "random"), ("layout", "brats1999"), ("shards.compression", "zstd")):
        cfg = default.get_config().to_dict()
        node, *path = field.split(".")
        if path:
            cfg[node][path[0]] = value
        else:
            cfg[node] = value
        with pytest.raises(ValueError):
            PreprocessingSpec.from_config(cfg)
