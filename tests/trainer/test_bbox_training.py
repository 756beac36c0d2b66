"""Training on a dataset whose records differ in shape (crop mode bbox).

The records are the brains' bounding boxes, a shape per patient; the
smallest are smaller than the 32^3 patch on one axis, and the input pipeline
pads them (image 0, mask background) as nnU-Net pads to the patch instead of
refusing; validation runs each whole record; a U-Net too deep for the
records' multiple is refused with the reason.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import tensorflow as tf

from configs.train import tiny_cpu
from serving import predictor as predictor_lib
from shared import manifest as manifest_lib, schema, trained_run
from trainer import augment as augment_lib, data, training


def _records(info, split_files):
    kind = manifest_lib.tf_compression_type(info.compression)
    return [schema.decode(r.numpy()) for r in tf.data.TFRecordDataset(list(split_files), compression_type=kind)]


def test_bbox_records_differ_in_shape_and_the_dataset_says_so(bbox_dataset):
    info = data.open_dataset(bbox_dataset.dataset_dir)
    assert info.volume_shape == (None, None, None) and info.volume_multiple == 8
    shapes = [r.image.shape[:3] for r in _records(info, info.train_files + info.val_files)]
    assert len(set(shapes)) > 2 and all(n % 8 == 0 for s in shapes for n in s)
    assert any(min(r.image.shape[:3]) < 32 for r in _records(info, info.train_files))  # smaller than the patch


def test_a_record_smaller_than_the_patch_is_padded_with_background(bbox_dataset):
    info = data.open_dataset(bbox_dataset.dataset_dir)
    small = next(r for r in _records(info, info.train_files) if r.image.shape[0] < 32)
    aug = augment_lib.AugmentConfig(patch_size=(32, 32, 32), foreground_share=0.0, flips=False,
                                    intensity_scale=0.0, intensity_shift=0.0)

    @tf.function  # as the input pipeline runs it: the record's shape is unknown until it is read
    def sample(serialized):
        example = data._parse_stored(info, serialized)
        assert example["image"].shape.as_list() == [None, None, None, 4]
        return augment_lib.augment(example, tf.constant([1, 2], tf.int32), aug)

    image, mask = sample(tf.constant(schema.encode(small)))
    assert image.shape == (32, 32, 32, 4) and mask.shape == (32, 32, 32, 4)
    x, before = small.image.shape[0], (32 - small.image.shape[0]) // 2
    y0, z0 = ((32 - n) // 2 for n in small.image.shape[1:3])  # 0 where the record already holds the patch
    image, mask = image.numpy(), mask.numpy()
    np.testing.assert_array_equal(image[before:before + x], small.image[:, y0:y0 + 32, z0:z0 + 32].astype(np.float32))
    np.testing.assert_array_equal(mask[before:before + x], small.mask[:, y0:y0 + 32, z0:z0 + 32])
    outside = np.ones(32, bool)
    outside[before:before + x] = False
    assert not image[outside].any() and (mask[outside][..., 0] == 1).all() and (mask.sum(-1) == 1).all()


def test_the_training_stream_gives_patches_from_every_record_shape(bbox_dataset):
    info = data.open_dataset(bbox_dataset.dataset_dir)
    aug = augment_lib.AugmentConfig.from_config(tiny_cpu.get_config())
    ds = data.train_dataset(info, 2, aug, samples_per_epoch=info.num_train, deterministic=True, cache=True)
    for images, masks in ds.take(2 * math.ceil(info.num_train / 2)):  # two epochs: every training record
        assert images.shape == (2, 32, 32, 32, 4) and masks.shape == (2, 32, 32, 32, 4)
        assert (tf.reduce_sum(masks, -1).numpy() == 1).all()


def test_a_tiny_u_net_trains_and_validates_on_whole_records_of_each_shape(bbox_model):
    run_dir = bbox_model.parent
    with open(run_dir / trained_run.HISTORY_FILE) as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(np.isfinite(float(rows[-1][k])) for k in rows[-1] if k.startswith("val_"))
    assert any(k.startswith("val_") for k in rows[-1])
    recorded = predictor_lib.recorded_inference(str(bbox_model))  # the window choice scored both windows
    assert {c["window"] for c in recorded.candidates} == {"patch", "volume"}
    volume = next(c for c in recorded.candidates if c["window"] == "volume")
    assert volume["window_size"] == [None, None, None] and np.isfinite(volume["patient_dice_mean"])


def test_a_u_net_too_deep_for_the_records_multiple_is_refused(bbox_dataset, tmp_path):
    cfg = tiny_cpu.get_config()
    cfg.data_dir = bbox_dataset.dataset_dir
    cfg.model.preset = "nnunet"  # depth 5: needs multiples of 16, the records are multiples of 8
    with pytest.raises(training.LaunchError, match="crop.multiple=16"):
        training.prepare(cfg.to_dict(), str(tmp_path))
