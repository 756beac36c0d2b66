"""The preprocessing spec: one reading of a config's shapes for every package."""

import pytest

from configs.preprocess import default, synthetic_small
from shared.spec import PreprocessingSpec


def test_fixed_and_centred_crops_give_the_record_shape_and_the_grid_they_need():
    brain = PreprocessingSpec.from_config(default.get_config().to_dict())  # the default: around the brain
    assert brain.crop_mode == "brain" and brain.crop_shape == (160, 192, 160)
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
