"""nnU-Net-style augmentation on the patch (trainer/data.py): alignment, identity, each transform's effect."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer import data

NO_INTENSITY = {"intensity_scale": 0.0, "intensity_shift": 0.0}
SPATIAL = {"rotate_p": 1.0, "scale_p": 1.0, "elastic_p": 1.0}


def _blocky_volume(shape=(40, 36, 44), block=8, seed=0):
    """Labels constant on 8^3 blocks; image = 10 * label + 5 (never 0, the value outside the volume)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, size=tuple(-(-s // block) for s in shape))
    classes = np.kron(coarse, np.ones((block,) * 3, int))[:shape[0], :shape[1], :shape[2]]
    image = np.stack([classes * 10.0 + 5.0] * 2, -1).astype(np.float16)
    mask = (classes[..., None] == np.arange(4)).astype(np.uint8)
    return {"image": tf.constant(image), "mask": tf.constant(mask)}


def _coordinate_volume(shape=(40, 36, 44), seed=0):
    """Labels 1..3 (0 only outside the volume); image channels: each voxel's x, y, z and 1.

    Trilinear interpolation of a linear function is exact, so an augmented
    patch's image says where in the volume each voxel was read from, and the
    label there must be the augmented mask's.
    """
    classes = np.random.default_rng(seed).integers(1, 4, size=shape)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    image = np.concatenate([grid, np.ones(shape + (1,))], -1).astype(np.float16)  # as stored; integers: exact
    mask = (classes[..., None] == np.arange(4)).astype(np.uint8)
    return {"image": tf.constant(image), "mask": tf.constant(mask)}, classes


@pytest.mark.parametrize("xla", [True, False])
def test_rotated_scaled_deformed_image_and_mask_stay_aligned(xla):
    example, classes = _coordinate_volume()
    aug = data.AugmentConfig(patch_size=(16, 16, 16), foreground_share=0.5, xla=xla, **NO_INTENSITY, **SPATIAL)
    for s in range(6):
        image, mask = (t.numpy() for t in data.augment(example, tf.constant([s, 3], tf.int32), aug))
        assert np.all(mask.sum(-1) == 1)  # nearest neighbour: still one-hot, nothing blended
        inside = np.abs(image[..., 3] - 1.0) < 1e-4  # all 8 interpolation corners in the volume
        coords = image[..., :3]
        clear = inside & np.all(np.abs(coords - np.floor(coords) - 0.5) > 1e-3, axis=-1)  # no rounding tie
        assert clear.mean() > 0.5
        source = np.round(coords[clear]).astype(int)
        np.testing.assert_array_equal(classes[tuple(source.T)], mask.argmax(-1)[clear])


def test_a_spatial_transform_of_angle_0_and_scale_1_is_the_plain_crop():
    example = _blocky_volume()
    identity = data.AugmentConfig(patch_size=(16, 16, 16), rotate_p=1.0, rotate_max_deg=0.0, **NO_INTENSITY)
    plain = data.AugmentConfig(patch_size=(16, 16, 16), **NO_INTENSITY)
    seed = tf.constant([4, 2], tf.int32)
    for got, want in zip(data.augment(example, seed, identity), data.augment(example, seed, plain)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_rotation_changes_the_patch_and_keeps_the_mask_one_hot():
    example = _blocky_volume()
    rotated = data.AugmentConfig(patch_size=(16, 16, 16), rotate_p=1.0, **NO_INTENSITY)
    plain = data.AugmentConfig(patch_size=(16, 16, 16), **NO_INTENSITY)
    seed = tf.constant([4, 2], tf.int32)
    got, want = data.augment(example, seed, rotated)[1].numpy(), data.augment(example, seed, plain)[1].numpy()
    assert not np.array_equal(got, want) and np.all(got.sum(-1) == 1)


@pytest.mark.parametrize("field", ["noise_p", "blur_p", "brightness_p", "contrast_p", "lowres_p", "gamma_p"])
def test_each_intensity_transform_changes_only_the_image(field):
    rng = np.random.default_rng(0)
    example = {"image": tf.constant(rng.normal(size=(20, 20, 20, 2)).astype(np.float32) + 3.0),
               "mask": _blocky_volume((20, 20, 20))["mask"]}
    seed = tf.constant([1, 1], tf.int32)
    base = data.AugmentConfig(patch_size=(16, 16, 16), **NO_INTENSITY)
    on = data.AugmentConfig(patch_size=(16, 16, 16), **NO_INTENSITY, **{field: 1.0})
    (img0, mask0), (img1, mask1) = data.augment(example, seed, base), data.augment(example, seed, on)
    np.testing.assert_array_equal(mask0.numpy(), mask1.numpy())
    assert img1.shape == img0.shape and np.isfinite(img1.numpy()).all()
    assert not np.allclose(img0.numpy(), img1.numpy(), atol=1e-4)


def test_probabilities_out_of_range_are_refused_by_name():
    with pytest.raises(ValueError, match="gamma_p"):
        data.AugmentConfig(patch_size=(16, 16, 16), gamma_p=1.5)
    with pytest.raises(ValueError, match="scale_range"):
        data.AugmentConfig(patch_size=(16, 16, 16), scale_range=(1.4, 0.7))


def test_the_full_set_runs_in_the_training_pipeline_graph(tiny_dataset):
    info = data.open_dataset(tiny_dataset.dataset_dir)
    aug = data.AugmentConfig(patch_size=(16, 16, 16), **{k: 1.0 for k in data.FULL_AUGMENT})
    image, mask = next(iter(data.train_dataset(info, 2, aug, seed=0, samples_per_epoch=2)))
    assert image.shape == (2, 16, 16, 16, 4) and mask.shape == (2, 16, 16, 16, 4)
    assert np.isfinite(image.numpy()).all() and np.all(mask.numpy().sum(-1) == 1)


def test_the_fused_image_kernel_sees_the_patch_not_the_volume():
    """XLA treats a slice's start as a compile-time constant: a kernel that cropped
    the volume itself compiled once per patch position (0.13 s each on a 64³
    volume, a 15x slower demo input pipeline).  The crop must happen before the
    kernel, so its only input of image size is the patch (one compilation)."""
    data._XLA_KERNELS.pop((16, 16, 16), None)  # earlier tests may have traced it for other channel counts
    volume = tf.constant(np.random.default_rng(0).random((20, 20, 20, 3)), tf.float16)
    for start in ([0, 0, 0], [3, 1, 2], [4, 4, 4]):
        data._image_patch(volume, tf.constant(start), (16, 16, 16), tf.constant([True, False, True]),
                          tf.ones([3]), tf.zeros([3]), xla=True)
    kernel = data._XLA_KERNELS[(16, 16, 16)]
    shapes = [tuple(spec.shape) for spec in kernel.get_concrete_function(
        tf.TensorSpec([16, 16, 16, 3], tf.float16), tf.TensorSpec([3], tf.bool),
        tf.TensorSpec([3], tf.float32), tf.TensorSpec([3], tf.float32)).structured_input_signature[0]]
    assert shapes[0] == (16, 16, 16, 3)
    assert kernel.experimental_get_tracing_count() == 1, "the kernel was traced for another input than the patch"
