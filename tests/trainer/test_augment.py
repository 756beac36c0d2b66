"""nnU-Net-style augmentation on the patch (trainer/augment.py, trainer/spatial.py): alignment, identity,
each transform's effect."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer import augment as augment_lib, data, spatial

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
    aug = augment_lib.AugmentConfig(patch_size=(16, 16, 16), foreground_share=0.5, xla=xla, **NO_INTENSITY, **SPATIAL)
    for s in range(6):
        image, mask = (t.numpy() for t in augment_lib.augment(example, tf.constant([s, 3], tf.int32), aug))
        assert np.all(mask.sum(-1) == 1)  # nearest neighbour: still one-hot, nothing blended
        inside = np.abs(image[..., 3] - 1.0) < 1e-4  # all 8 interpolation corners in the volume
        coords = image[..., :3]
        clear = inside & np.all(np.abs(coords - np.floor(coords) - 0.5) > 1e-3, axis=-1)  # no rounding tie
        assert clear.mean() > 0.5
        source = np.round(coords[clear]).astype(int)
        np.testing.assert_array_equal(classes[tuple(source.T)], mask.argmax(-1)[clear])


def test_a_spatial_transform_of_angle_0_and_scale_1_is_the_plain_crop():
    example = _blocky_volume()
    identity = augment_lib.AugmentConfig(patch_size=(16, 16, 16), rotate_p=1.0, rotate_max_deg=0.0, **NO_INTENSITY)
    plain = augment_lib.AugmentConfig(patch_size=(16, 16, 16), **NO_INTENSITY)
    seed = tf.constant([4, 2], tf.int32)
    for got, want in zip(augment_lib.augment(example, seed, identity), augment_lib.augment(example, seed, plain)):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_rotation_changes_the_patch_and_keeps_the_mask_one_hot():
    example = _blocky_volume()
    rotated = augment_lib.AugmentConfig(patch_size=(16, 16, 16), rotate_p=1.0, **NO_INTENSITY)
    plain = augment_lib.AugmentConfig(patch_size=(16, 16, 16), **NO_INTENSITY)
    seed = tf.constant([4, 2], tf.int32)
    got = augment_lib.augment(example, seed, rotated)[1].numpy()
    want = augment_lib.augment(example, seed, plain)[1].numpy()
    assert not np.array_equal(got, want) and np.all(got.sum(-1) == 1)


@pytest.mark.parametrize("field", ["noise_p", "blur_p", "brightness_p", "contrast_p", "lowres_p", "gamma_p"])
def test_each_intensity_transform_changes_only_the_image(field):
    rng = np.random.default_rng(0)
    example = {"image": tf.constant(rng.normal(size=(20, 20, 20, 2)).astype(np.float32) + 3.0),
               "mask": _blocky_volume((20, 20, 20))["mask"]}
    seed = tf.constant([1, 1], tf.int32)
    base = augment_lib.AugmentConfig(patch_size=(16, 16, 16), **NO_INTENSITY)
    on = augment_lib.AugmentConfig(patch_size=(16, 16, 16), **NO_INTENSITY, **{field: 1.0})
    (img0, mask0), (img1, mask1) = augment_lib.augment(example, seed, base), augment_lib.augment(example, seed, on)
    np.testing.assert_array_equal(mask0.numpy(), mask1.numpy())
    assert img1.shape == img0.shape and np.isfinite(img1.numpy()).all()
    assert not np.allclose(img0.numpy(), img1.numpy(), atol=1e-4)


def test_probabilities_out_of_range_are_refused_by_name():
    with pytest.raises(ValueError, match="gamma_p"):
        augment_lib.AugmentConfig(patch_size=(16, 16, 16), gamma_p=1.5)
    with pytest.raises(ValueError, match="scale_range"):
        augment_lib.AugmentConfig(patch_size=(16, 16, 16), scale_range=(1.4, 0.7))


def test_the_full_set_runs_in_the_training_pipeline_graph(tiny_dataset):
    info = data.open_dataset(tiny_dataset.dataset_dir)
    aug = augment_lib.AugmentConfig(patch_size=(16, 16, 16), **{k: 1.0 for k in augment_lib.FULL_AUGMENT})
    image, mask = next(iter(data.train_dataset(info, 2, aug, seed=0, samples_per_epoch=2)))
    assert image.shape == (2, 16, 16, 16, 4) and mask.shape == (2, 16, 16, 16, 4)
    assert np.isfinite(image.numpy()).all() and np.all(mask.numpy().sum(-1) == 1)


def test_the_fused_image_kernel_sees_the_patch_not_the_volume():
    """XLA treats a slice's start as a compile-time constant: a kernel that cropped
    the volume itself compiled once per patch position (0.13 s each on a 64³
    volume, a 15x slower demo input pipeline).  The crop must happen before the
    kernel, so its only input of image size is the patch (one compilation)."""
    augment_lib._XLA_KERNELS.pop((16, 16, 16), None)  # earlier tests may have traced it for other channel counts
    volume = tf.constant(np.random.default_rng(0).random((20, 20, 20, 3)), tf.float16)
    for start in ([0, 0, 0], [3, 1, 2], [4, 4, 4]):
        augment_lib._image_patch(volume, tf.constant(start), (16, 16, 16), tf.constant([True, False, True]),
                                 tf.ones([3]), tf.zeros([3]), xla=True)
    kernel = augment_lib._XLA_KERNELS[(16, 16, 16)]
    shapes = [tuple(spec.shape) for spec in kernel.get_concrete_function(
        tf.TensorSpec([16, 16, 16, 3], tf.float16), tf.TensorSpec([3], tf.bool),
        tf.TensorSpec([3], tf.float32), tf.TensorSpec([3], tf.float32)).structured_input_signature[0]]
    assert shapes[0] == (16, 16, 16, 3)
    assert kernel.experimental_get_tracing_count() == 1, "the kernel was traced for another input than the patch"


# ----------------------------------------------------------------------------- the spatial resampling itself


def _warp_case(seed=0, shape=(40, 36, 44), channels=3, patch=(24, 20, 28)):
    """A random float16 volume, a one-hot mask of 4 random labels, and a random rotation + zoom."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape + (channels,)).astype(np.float16)
    classes = rng.integers(0, 4, size=shape)
    mask = (classes[..., None] == np.arange(4)).astype(np.uint8)
    angles = rng.uniform(-0.5, 0.5, 3)
    matrix = spatial.rotation_matrix(tf.constant(angles, tf.float32)).numpy() / rng.uniform(0.7, 1.4)
    centre = np.array(shape, np.float32) / 2 + rng.uniform(-6, 6, 3).astype(np.float32)
    return image, classes, mask, matrix.astype(np.float32), centre, patch


def _reference_coordinates(patch, centre, matrix, flip, displacement=None):
    """float64 numpy: centre + matrix @ (F(v - patch centre) + d(Fv)), the definition."""
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in patch), indexing="ij"), -1).astype(np.float64)
    for axis in range(3):
        if flip[axis]:
            grid[..., axis] = patch[axis] - 1 - grid[..., axis]
    offsets = grid - (np.array(patch) - 1) / 2.0
    if displacement is not None:
        offsets += displacement[tuple(grid[..., a].astype(int) for a in range(3))]
    return centre + offsets @ np.asarray(matrix, np.float64).T


def _run_warp(image, mask, centre, matrix, grid, patch, flip, xla=True):
    got = augment_lib._warp(tf.constant(image), tf.constant(mask), tf.constant(centre), tf.constant(matrix), grid, patch,
                            tf.constant(flip), tf.ones([image.shape[-1]]), tf.zeros([image.shape[-1]]), xla)
    return got[0].numpy(), got[1].numpy()


@pytest.mark.parametrize("flip", [(False, False, False), (True, False, True)])
def test_warp_is_trilinear_and_nearest_at_the_defined_coordinates(flip):
    """Against scipy: the image is the trilinear read with zeros outside (``grid-constant``), the mask
    the nearest voxel's one-hot row, background outside, wherever the rounding is no tie."""
    from scipy import ndimage

    image, classes, mask, matrix, centre, patch = _warp_case()
    got_image, got_mask = _run_warp(image, mask, centre, matrix, None, patch, flip)
    coords = _reference_coordinates(patch, centre, matrix, flip)
    want = np.stack([ndimage.map_coordinates(image[..., c].astype(np.float64), np.moveaxis(coords, -1, 0), order=1,
                                             mode="grid-constant", cval=0.0) for c in range(image.shape[-1])], -1)
    np.testing.assert_allclose(got_image, want, atol=2e-4)
    index = np.round(coords).astype(int)
    inside = np.all((index >= 0) & (index < classes.shape), axis=-1)
    labels = np.where(inside, classes[tuple(np.clip(index, 0, np.array(classes.shape) - 1).T)].T, 0)
    clear = np.all(np.abs(coords - np.floor(coords) - 0.5) > 1e-3, axis=-1)
    assert inside.mean() > 0.5 and (~inside).any() and clear.mean() > 0.99
    np.testing.assert_array_equal(got_mask.argmax(-1)[clear], labels[clear])
    assert np.all(got_mask.sum(-1) == 1)


def test_flips_folded_into_the_coordinates_mirror_the_patch_exactly():
    image, _, mask, matrix, centre, patch = _warp_case(seed=1)
    grid = spatial.elastic_grid(3.0, tf.constant([5, 6]))
    for field in (None, grid):
        plain = _run_warp(image, mask, centre, matrix, field, patch, (False, False, False))
        flipped = _run_warp(image, mask, centre, matrix, field, patch, (True, True, False))
        for got, want in zip(flipped, plain):
            np.testing.assert_array_equal(got, want[::-1, ::-1])


def test_the_elastic_field_is_the_bilinear_resize_of_the_grid_and_moves_voxels_by_it():
    grid = spatial.elastic_grid(4.0, tf.constant([3, 9]))
    patch = (24, 20, 28)
    field = spatial._elastic_field(grid, patch).numpy()
    np.testing.assert_allclose(field, spatial.resize3d(grid, tf.constant(patch), "bilinear").numpy(), atol=1e-5)
    # the warp reads at centre + matrix @ (offset + field): the coordinate volume's image says where
    example, _ = _coordinate_volume()
    image, mask = example["image"].numpy(), example["mask"].numpy()
    centre, matrix = np.array([20.0, 18.0, 22.0], np.float32), np.eye(3, dtype=np.float32) * 0.9
    got, _ = _run_warp(image, mask, centre, matrix, grid, patch, (False, True, False))
    want = _reference_coordinates(patch, centre, matrix, (False, True, False), field)
    inside = np.abs(got[..., 3] - 1.0) < 1e-4
    assert inside.mean() > 0.9
    np.testing.assert_allclose(got[..., :3][inside], want[inside], atol=1e-3)


def test_xla_and_plain_tensorflow_warps_agree():
    image, _, mask, matrix, centre, patch = _warp_case(seed=2)
    grid = spatial.elastic_grid(3.0, tf.constant([1, 2]))
    fused = _run_warp(image, mask, centre, matrix, grid, patch, (True, False, False), xla=True)
    plain = _run_warp(image, mask, centre, matrix, grid, patch, (True, False, False), xla=False)
    np.testing.assert_allclose(fused[0], plain[0], atol=1e-4)
    assert (fused[1] == plain[1]).all(-1).mean() > 0.999  # only rounding ties may differ


def test_spatial_augmentation_is_deterministic_per_seed():
    example = _blocky_volume()
    aug = augment_lib.AugmentConfig(patch_size=(16, 16, 16), **SPATIAL)
    first = [t.numpy() for t in augment_lib.augment(example, tf.constant([7, 1], tf.int32), aug)]
    again = [t.numpy() for t in augment_lib.augment(example, tf.constant([7, 1], tf.int32), aug)]
    other = [t.numpy() for t in augment_lib.augment(example, tf.constant([8, 1], tf.int32), aug)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_the_spatial_kernels_compile_once_whatever_the_draws():
    """Angles, zoom, centre, flips and the elastic grid are kernel inputs, never compile-time constants."""
    for key in [k for k in spatial._SPATIAL_KERNELS if k[1] == (16, 16, 16)]:
        del spatial._SPATIAL_KERNELS[key]
    example = _blocky_volume()
    aug = augment_lib.AugmentConfig(patch_size=(16, 16, 16), foreground_share=0.5, rotate_p=0.7, scale_p=0.7,
                                    elastic_p=0.5)
    fn = tf.function(lambda s: augment_lib.augment(example, s, aug), autograph=False)
    for s in range(8):
        fn(tf.constant([s, 5], tf.int32))
    kernels = {k: v for k, v in spatial._SPATIAL_KERNELS.items() if k[1] == (16, 16, 16)}
    assert {k[0] for k in kernels} == {"affine", "elastic", "sample", "intensity"}
    for key, kernel in kernels.items():
        assert kernel.experimental_get_tracing_count() == 1, key


def test_gamma_is_the_power_of_the_rescaled_channel():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(8, 8, 8, 2)).astype(np.float32)
    image[0, 0, 0] = image.min(axis=(0, 1, 2)) - 1.0  # each channel's minimum: x = 0 after rescaling
    for gamma in (0.7, 1.5):
        low, high = image.min(axis=(0, 1, 2)), image.max(axis=(0, 1, 2))
        want = ((image - low) / (high - low + 1e-7)) ** gamma * (high - low) + low
        for xla in (True, False):
            got = augment_lib._fused("gamma", augment_lib._gamma, tf.constant(image), tf.constant(gamma), xla).numpy()
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            assert np.isfinite(got).all()


def _one_small_class(shape=(48, 48, 48)):
    """Class 2 fills a large block, class 3 one voxel far from it, class 1 is absent."""
    classes = np.zeros(shape, int)
    classes[4:28, 4:28, 4:28] = 2
    classes[40, 40, 40] = 3
    mask = (classes[..., None] == np.arange(4)).astype(np.uint8)
    image = np.ones(shape + (1,), np.float16)
    return {"image": tf.constant(image), "mask": tf.constant(mask)}


@pytest.mark.parametrize("pick", ["voxel", "class"])
def test_foreground_pick_class_centres_on_a_small_class_as_often_as_on_a_large_one(pick):
    """nnU-Net's sampling (``class``) draws a present tumour class first: the lone class-3 voxel is the centre
    of about half the foreground patches; drawing any tumour voxel (``voxel``) almost never centres on it."""
    example = _one_small_class()
    aug = augment_lib.AugmentConfig(patch_size=(8, 8, 8), foreground_share=1.0, flips=False, foreground_pick=pick,
                                    **NO_INTENSITY)
    hits = 0
    for i in range(60):
        _, mask = augment_lib.augment(example, tf.constant([3, i]), aug)
        hits += int(mask.numpy()[..., 3].sum() > 0)
    if pick == "class":
        assert 15 <= hits <= 45  # about 30 of 60, never class 1 (absent)
    else:
        assert hits <= 2  # 1 voxel of 13,825


def test_foreground_pick_is_checked_and_old_configs_keep_voxel():
    with pytest.raises(ValueError, match="foreground_pick"):
        augment_lib.AugmentConfig(patch_size=(8, 8, 8), foreground_pick="region")
    from configs.train import tiny_cpu

    cfg = tiny_cpu.get_config()
    cfg.augment.foreground_pick = "class"
    assert augment_lib.AugmentConfig.from_config(cfg).foreground_pick == "class"
    del cfg.augment["foreground_pick"]  # a run configured before the field existed samples as it did
    assert augment_lib.AugmentConfig.from_config(cfg).foreground_pick == "voxel"


def _random_tumour(shape, seed):
    """A one-hot mask with every tumour class scattered through it (class 1 absent when seed is odd)."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(4, size=shape, p=[0.9, 0.03, 0.05, 0.02])
    if seed % 2:
        classes[classes == 1] = 0
    return tf.constant((classes[..., None] == np.arange(4)).astype(np.uint8))


@pytest.mark.parametrize("pick", ["voxel", "class"])
@pytest.mark.parametrize("shape", [(20, 18, 22), (12, 18, 9)], ids=["holds_the_patch", "padded_to_it"])
def test_a_patch_centre_from_the_cached_index_is_the_one_the_full_scan_draws(pick, shape):
    # Centring a patch on a tumour voxel listed every tumour voxel of the whole volume for every patch
    # (a class pick: ~43 ms CPU per patch at 160x192x160); a cached record lists them once. Same draws, same
    # centres, so runs trained before the index sample exactly as they did -- padded volumes included
    patch = (16, 16, 16)
    for seed_of_mask in (0, 1):
        mask = _random_tumour(shape, seed_of_mask)
        _, padded = augment_lib.pad_to_patch(tf.zeros(shape + (1,), tf.float16), mask, patch)
        index = augment_lib.tumour_index(mask, pick)
        for i in range(40):
            seed = tf.constant([7, i])
            scanned = augment_lib._patch_start(padded, patch, 1.0, seed, pick)
            indexed = augment_lib._patch_start(padded, patch, 1.0, seed, pick,
                                               index=augment_lib.shift_index(index, mask, patch))
            assert scanned.numpy().tolist() == indexed.numpy().tolist(), (pick, shape, seed_of_mask, i)


def test_an_index_without_tumour_centres_anywhere_as_the_scan_does():
    mask = tf.constant((np.zeros((20, 20, 20))[..., None] == np.arange(4)).astype(np.uint8))
    for pick in ("voxel", "class"):
        index = augment_lib.tumour_index(mask, pick)
        assert index[augment_lib.TUMOUR_VOXELS].shape[0] == 0
        for i in range(5):
            seed = tf.constant([1, i])
            assert (augment_lib._patch_start(mask, (8, 8, 8), 1.0, seed, pick, index=index).numpy().tolist()
                    == augment_lib._patch_start(mask, (8, 8, 8), 1.0, seed, pick).numpy().tolist())


def test_augment_uses_the_index_a_cached_example_carries():
    # the index is what the patch is centred on: a (deliberately wrong) index pointing at one corner moves it
    mask = _random_tumour((24, 24, 24), 0)
    example = {"image": tf.ones((24, 24, 24, 1), tf.float16), "mask": mask}
    aug = augment_lib.AugmentConfig(patch_size=(8, 8, 8), foreground_share=1.0, flips=False, **NO_INTENSITY)
    corner = {augment_lib.TUMOUR_VOXELS: tf.constant([[23, 23, 23]], tf.int32),
              augment_lib.TUMOUR_CLASS_COUNTS: tf.constant([1], tf.int32)}
    _, plain = augment_lib.augment(example, tf.constant([2, 5]), aug)
    _, cornered = augment_lib.augment({**example, **corner}, tf.constant([2, 5]), aug)
    assert cornered.numpy().tolist() == mask.numpy()[16:, 16:, 16:].astype(np.float32).tolist()
    assert plain.numpy().tolist() != cornered.numpy().tolist()
