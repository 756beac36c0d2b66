"""Training-sample augmentation: the random patch and every transform applied to it.

Split out of the input pipeline (``trainer.data``) so the pipeline reads as
records -> parse -> :func:`augment` -> batch, and the augmentation (its
configuration :class:`AugmentConfig`, the draws from a per-sample stateless
seed and the transforms) can be read, tested and benchmarked on its own.
The spatial resampling it uses lives in ``trainer.spatial``.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from trainer.spatial import elastic_grid, resize3d, rotation_matrix, sample_patch, spatial_kernel, warp_coordinates

# ----------------------------------------------------------------------------- patch, flips, intensity
#
# Cost matters here: on a CPU host the input pipeline shares the cores with
# training.  Every step works on the patch, never on the whole volume: the
# image stays float16 until it is cropped, the one-hot mask (4 x uint8 per
# voxel) is cropped and flipped as one uint32 per voxel, and crop, flips,
# float32 cast and intensity run as one fused XLA kernel (``xla=True``), which
# is about 6x cheaper than the same ops one by one (channels-last broadcasts
# over 3 channels are slow in TensorFlow's CPU kernels).  Tumour voxels are
# listed only for the patches that are to be centred on one.


FOREGROUND_PICKS = ("voxel", "class")


def _tumour_voxels(mask, pick: str, seed):
    """The voxels a foreground patch may be centred on: every tumour voxel (``voxel``), or those of one
    tumour class drawn uniformly among the classes present (``class``, as nnU-Net samples), so a small
    class (ET) is centred on as often as a large one (ED) instead of in proportion to its volume."""
    if pick == "voxel":
        return tf.where(mask[..., 0] == 0)  # background class is channel 0
    present = tf.where(tf.reduce_any(mask[..., 1:] > 0, axis=(0, 1, 2)))[:, 0] + 1
    count = tf.shape(present)[0]

    def of_one_class():
        i = tf.random.stateless_uniform([], seed=seed + 7, maxval=count, dtype=tf.int32)
        return tf.where(tf.gather(mask, present[i], axis=3) > 0)

    return tf.cond(count > 0, of_one_class, lambda: tf.zeros([0, 3], tf.int64))


# A record's tumour voxels listed once, kept by trainer.data's cache (benchmarks/bench_patch_centre.py)
TUMOUR_VOXELS = "tumour_voxels"  # int32 (n, 3): row-major, grouped by class for ``class``
TUMOUR_CLASS_COUNTS = "tumour_class_counts"  # int32: voxels per group (one group for ``voxel``)
_PAD_OFFSET = "pad_offset"  # not stored: int32 (3,), how far pad_to_patch moved the record (shift_index)


def tumour_index(mask, pick: str) -> dict:
    """What :func:`_tumour_voxels` lists for any draw, listed once (a whole-record scan per patch cost ~6 ms
    CPU at 160x192x160, ~43 for ``class``): ``voxel``, the tumour voxels in ``tf.where``'s order; ``class``,
    each class's in that order, class after class, so the k-th of a group is the scan's k-th voxel."""
    if pick == "voxel":
        voxels = [tf.where(mask[..., 0] == 0)]
    else:
        voxels = [tf.where(mask[..., c] > 0) for c in range(1, mask.shape[-1])]
    return {TUMOUR_VOXELS: tf.cast(tf.concat(voxels, 0), tf.int32),
            TUMOUR_CLASS_COUNTS: tf.stack([tf.shape(v, out_type=tf.int32)[0] for v in voxels])}


def shift_index(index: dict, mask, patch) -> dict:
    """``index`` of an unpadded ``mask`` for the volume :func:`pad_to_patch` makes of it: the voxel drawn
    moves by the padding (the list itself is not copied for every patch)."""
    offset = tf.maximum(tf.constant(patch, tf.int32) - tf.shape(mask, out_type=tf.int32)[:3], 0) // 2
    return {TUMOUR_VOXELS: index[TUMOUR_VOXELS], TUMOUR_CLASS_COUNTS: index[TUMOUR_CLASS_COUNTS], _PAD_OFFSET: offset}


def _indexed_tumour_voxel(index: dict, seed):
    """(voxel, whether there was one) drawn from a :func:`tumour_index` with the scan's own draws."""
    counts = index[TUMOUR_CLASS_COUNTS]
    starts = tf.cumsum(counts, exclusive=True)
    if counts.shape[0] == 1:  # voxel: one group
        group = tf.constant(0)
    else:  # class: a present class first (seed + 7), as _tumour_voxels draws it
        present = tf.cast(tf.where(counts > 0)[:, 0], tf.int32)
        draw = tf.random.stateless_uniform([], seed=seed + 7, maxval=tf.maximum(tf.size(present), 1),
                                           dtype=tf.int32)
        group = tf.cond(tf.size(present) > 0, lambda: present[draw], lambda: tf.constant(0))
    n = counts[group]
    k = tf.random.stateless_uniform([], seed=seed + 1, maxval=tf.maximum(n, 1), dtype=tf.int32)
    voxel = tf.cond(n > 0, lambda: index[TUMOUR_VOXELS][starts[group] + k], lambda: tf.zeros([3], tf.int32))
    return voxel + index.get(_PAD_OFFSET, 0), n > 0


def _patch_start(mask, patch, foreground_share, seed, pick: str = "voxel", index: dict | None = None):
    """Start corner of a patch; with probability ``foreground_share`` centred on a tumour voxel (chosen as
    ``pick`` says: :func:`_tumour_voxels`, or from ``index``, :func:`tumour_index` shifted to the padding)."""
    shape = tf.shape(mask)[:3]
    patch = tf.constant(patch, tf.int32)
    coin = tf.random.stateless_uniform([], seed=seed)

    def anywhere():
        high = tf.maximum(shape - patch + 1, 1)
        return tf.cast(tf.random.stateless_uniform([3], seed=seed + 2) * tf.cast(high, tf.float32), tf.int32)

    def on_tumour():
        if index is not None:
            voxel, found = _indexed_tumour_voxel(index, seed)
            return tf.cond(found, lambda: voxel - patch // 2, anywhere)
        tumour = _tumour_voxels(mask, pick, seed)
        n = tf.shape(tumour)[0]

        def pick_one():
            i = tf.random.stateless_uniform([], seed=seed + 1, maxval=n, dtype=tf.int32)
            return tf.cast(tumour[i], tf.int32) - patch // 2

        return tf.cond(n > 0, pick_one, anywhere)

    start = tf.cond(coin < foreground_share, on_tumour, anywhere)
    return tf.clip_by_value(start, 0, tf.maximum(shape - patch, 0))


def pad_to_patch(image, mask, patch):
    """Zero-pad a volume smaller than ``patch`` on some axis to hold it, centred, as nnU-Net pads to the patch.

    The image gets 0 (the normalised background) and the one-hot mask the
    background class.  Records of crop mode bbox have a shape each, and a
    small brain's may be smaller than the patch; a volume whose static shape
    holds the patch (every record of a fixed-shape dataset) is returned as is.
    """
    static = image.shape[:3]
    if static.is_fully_defined() and all(int(s) >= p for s, p in zip(static, patch)):
        return image, mask
    need = tf.maximum(tf.constant(patch, tf.int32) - tf.shape(image)[:3], 0)
    pads = tf.concat([tf.stack([need // 2, need - need // 2], axis=1), [[0, 0]]], 0)

    def padded():
        background = tf.pad(mask[..., :1], pads, constant_values=1)
        return tf.pad(image, pads), tf.concat([background, tf.pad(mask[..., 1:], pads)], -1)

    out_image, out_mask = tf.cond(tf.reduce_any(need > 0), padded, lambda: (image, mask))
    return (tf.ensure_shape(out_image, [None, None, None, image.shape[-1]]),
            tf.ensure_shape(out_mask, [None, None, None, mask.shape[-1]]))


def _flip_axes(flip):
    """Indices of the spatial axes to mirror, from a boolean [3] vector."""
    return tf.boolean_mask(tf.range(3), flip)


def _crop_flip(volume, start, patch, flip=None):
    """``volume[start:start+patch]`` on the three spatial axes, then mirrored where ``flip`` says.

    A uint8 volume with 4 channels (the one-hot mask) moves as one uint32 per
    voxel: a quarter of the elements to copy and reverse.
    """
    packed = volume.dtype == tf.uint8 and volume.shape.rank == 4 and volume.shape[-1] == 4
    if packed:
        volume = tf.bitcast(volume, tf.uint32)  # (D, H, W)
        volume = tf.slice(volume, start, patch)
    else:
        volume = tf.slice(volume, tf.concat([start, [0]], 0), tf.concat([tf.constant(patch, tf.int32), [-1]], 0))
    if flip is not None:
        volume = tf.reverse(volume, _flip_axes(flip))
    return tf.bitcast(volume, tf.uint8) if packed else volume


def random_patch(image, mask, patch, foreground_share, seed):
    """Same random box cut from image and mask (patch must fit the volume)."""
    start = _patch_start(mask, patch, foreground_share, seed)
    return _crop_flip(image, start, patch), _crop_flip(mask, start, patch)


def _flip_coins(seed):
    return tf.random.stateless_uniform([3], seed=seed) < 0.5


def random_flips(image, mask, seed):
    """Mirror each spatial axis with probability 1/2, image and mask together."""
    axes = _flip_axes(_flip_coins(seed))
    return tf.reverse(image, axes), tf.reverse(mask, axes)


def random_axial_rotation(image, mask, seed):
    """Rotate by a multiple of 90 degrees in the axial (first two axes) plane."""
    k = tf.random.stateless_uniform([], seed=seed, maxval=4, dtype=tf.int32)

    def rot(volume):
        # rot90 acts on axes (1, 2) of a 4-D batch: treat the first axis as the batch
        moved = tf.transpose(volume, [2, 0, 1, 3])
        return tf.transpose(tf.image.rot90(moved, k), [1, 2, 0, 3])

    return rot(image), rot(mask)


def _intensity_draws(channels, scale_range, shift_range, seed):
    scale = tf.random.stateless_uniform([channels], seed=seed, minval=1 - scale_range, maxval=1 + scale_range)
    shift = tf.random.stateless_uniform([channels], seed=seed + 1, minval=-shift_range, maxval=shift_range)
    return scale, shift


def _scale_shift_in_brain(image, scale, shift):
    brain = tf.reduce_any(tf.not_equal(image, 0), axis=-1, keepdims=True)
    return tf.where(brain, image * scale + shift, tf.zeros_like(image))


def random_intensity(image, scale_range, shift_range, seed):
    """Per-channel scale and shift inside the brain; background stays 0."""
    scale, shift = _intensity_draws(tf.shape(image)[-1], scale_range, shift_range, seed)
    return _scale_shift_in_brain(image, tf.cast(scale, image.dtype), tf.cast(shift, image.dtype))


def _image_patch_ops(image, flip, scale, shift):
    """float16/32 patch -> float32 patch: flips, cast, intensity (scale 1, shift 0: none)."""
    for axis in range(3):  # a select, not a data-dependent axis list: XLA needs static axes
        image = tf.where(flip[axis], tf.reverse(image, [axis]), image)
    return _scale_shift_in_brain(tf.cast(image, tf.float32), scale, shift)


_XLA_KERNELS: dict = {}


def _image_patch(image, start, patch, flip, scale, shift, xla: bool):
    if not xla:
        image = _crop_flip(image, start, patch, flip)
        return _scale_shift_in_brain(tf.cast(image, tf.float32), scale, shift)
    # The crop stays outside the XLA kernel: XLA takes a slice's start as a
    # compile-time constant, so a kernel that crops compiles anew for every
    # patch position (0.13 s each, and the compilation cache grows without end).
    image = _crop_flip(image, start, patch)
    kernel = _XLA_KERNELS.get(tuple(patch))
    if kernel is None:
        kernel = _XLA_KERNELS[tuple(patch)] = tf.function(_image_patch_ops, jit_compile=True, autograph=False)
    return kernel(image, flip, scale, shift)


# ----------------------------------------------------------------------------- nnU-Net-style augmentation
#
# Every transform below fires with its own probability (AugmentConfig.*_p) and
# costs nothing when it does not: a tf.cond picks the plain path.  Spatial
# transforms (rotation by any angle, scaling, elastic deformation) and the crop
# are one resampling: each patch voxel's source coordinate in the volume is
# computed and the image is read there by trilinear interpolation, the mask by
# nearest neighbour (one-hot rows are copied, never blended), so image and mask
# move together; outside the volume the image is 0 (the normalised background)
# and the mask background; the flips are folded into the coordinates.
# Intensity transforms work on the float32 patch.


def _warp(image, mask, centre, matrix, grid, patch, flip, scale, shift, xla: bool):
    """Patch of ``image`` (trilinear) and ``mask`` (nearest) around ``centre`` under ``matrix``, plus the
    elastic displacement of the coarse ``grid`` (None: none), mirrored where ``flip`` says, and the image
    scaled and shifted in the brain.

    Three XLA kernels, each of whose results is written out once: the
    coordinates, the two reads, the intensity.  Fused into one, XLA computes
    a producer again inside every consumer that reads it: the elastic field
    in every gather's index and the 8-corner interpolation in the brain test
    of every channel, which made the single kernel 3x slower.  None of the
    inputs is a value XLA treats as a compile-time constant.
    """
    patch = tuple(patch)
    if not xla or image.shape[-1] is None or mask.shape[-1] is None:
        coords = warp_coordinates(centre, matrix, flip, grid, patch)
        image, mask = sample_patch(image, mask, coords, patch)
        return _scale_shift_in_brain(image, scale, shift), mask
    if grid is None:
        coords = spatial_kernel(("affine", patch), lambda c, r, f: warp_coordinates(c, r, f, None, patch))(
            centre, matrix, flip)
    else:
        coords = spatial_kernel(("elastic", patch), lambda c, r, f, g: warp_coordinates(c, r, f, g, patch))(
            centre, matrix, flip, grid)
    image, mask = spatial_kernel(("sample", patch), lambda i, m, c: sample_patch(i, m, c, patch))(
        image, mask, coords)
    return spatial_kernel(("intensity", patch), _scale_shift_in_brain)(image, scale, shift), mask


def _coin(p, seed):
    return tf.random.stateless_uniform([], seed=seed) < p


def _uniform(low, high, seed, shape=()):
    return tf.random.stateless_uniform(list(shape), seed=seed, minval=low, maxval=high)


def _spatial_draws(aug: "AugmentConfig", seed):
    """(apply?, elastic?, matrix, coarse elastic grid) of one sample: rotation, scaling, elastic, each by its coin."""
    rotate, scale, elastic = _coin(aug.rotate_p, seed + 7), _coin(aug.scale_p, seed + 8), _coin(aug.elastic_p, seed + 9)
    limit = aug.rotate_max_deg * 3.141592653589793 / 180.0
    angles = tf.where(rotate, _uniform(-limit, limit, seed + 10, [3]), tf.zeros([3]))
    zoom = tf.where(scale, _uniform(aug.scale_range[0], aug.scale_range[1], seed + 11), 1.0)
    matrix = rotation_matrix(angles) / zoom  # zoom > 1 magnifies: the patch reads a smaller box
    grid = elastic_grid(aug.elastic_magnitude, seed + 12)
    return rotate | scale | elastic, elastic, matrix, grid


def _gaussian_blur(image, sigma, radius: int = 3):
    """Separable Gaussian blur of every channel of a (D, H, W, C) patch (zero padding).

    A weighted sum of shifted copies per axis, which XLA fuses into one pass;
    TensorFlow's conv3d on one-channel volumes was 20x slower.
    """
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= tf.reduce_sum(kernel)
    for axis in range(3):
        size = image.shape[axis]
        pads = [[0, 0]] * 4
        pads[axis] = [radius, radius]
        padded = tf.pad(image, pads)
        image = sum(kernel[k] * tf.gather(padded, tf.range(k, k + size), axis=axis) for k in range(2 * radius + 1))
    return image


def _gamma(image, gamma):
    """x -> x**gamma on each channel rescaled to [0, 1], then back to its range (nnU-Net's gamma).

    As exp(gamma * log x) (x = 0 gives exp(-inf) = 0, as x**gamma): XLA's CPU
    pow is 1.7x slower than its exp and log together.
    """
    low = tf.reduce_min(image, axis=[0, 1, 2], keepdims=True)
    span = tf.reduce_max(image, axis=[0, 1, 2], keepdims=True) - low
    return tf.exp(gamma * tf.math.log((image - low) / (span + 1e-7))) * span + low


def _contrast(image, factor):
    """Per channel: spread around the mean by ``factor``, clipped to the channel's original range."""
    mean = tf.reduce_mean(image, axis=[0, 1, 2], keepdims=True)
    low = tf.reduce_min(image, axis=[0, 1, 2], keepdims=True)
    high = tf.reduce_max(image, axis=[0, 1, 2], keepdims=True)
    return tf.clip_by_value((image - mean) * factor + mean, low, high)


def _low_resolution(image, zoom):
    """Down to ``zoom`` of the size (nearest), back up (linear): a scan acquired coarser."""
    size = tf.shape(image)[:3]
    small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * zoom), tf.int32), 1)
    return resize3d(resize3d(image, small, "nearest"), size, "bilinear")


_INTENSITY_KERNELS: dict = {}


def _fused(name, transform, image, value, xla: bool):
    """``transform(image, value)``, as one XLA kernel per (transform, patch shape) when ``xla``."""
    if not xla or not image.shape.is_fully_defined():
        return transform(image, value)
    key = (name, tuple(image.shape))
    if key not in _INTENSITY_KERNELS:
        _INTENSITY_KERNELS[key] = tf.function(transform, jit_compile=True, autograph=False)
    return _INTENSITY_KERNELS[key](image, value)


def _maybe(p, seed, name, transform, draw, image, xla: bool):
    """``transform(image, draw())`` with probability ``p`` (never built when p is 0)."""
    if p <= 0:
        return image
    return tf.cond(_coin(p, seed), lambda: _fused(name, transform, image, draw(), xla), lambda: image)


def _add_noise(image, noise):
    return image + noise


def intensity_transforms(image, aug: "AugmentConfig", seed):
    """nnU-Net's order: noise, blur, brightness, contrast, low resolution, gamma; each by its coin."""
    x = aug.xla
    image = _maybe(aug.noise_p, seed + 13, "noise", _add_noise, lambda: tf.random.stateless_normal(
        tf.shape(image), seed=seed + 14) * _uniform(0.0, aug.noise_std, seed + 15), image, x)
    image = _maybe(aug.blur_p, seed + 16, "blur", _gaussian_blur,
                   lambda: _uniform(aug.blur_sigma[0], aug.blur_sigma[1], seed + 17), image, x)
    image = _maybe(aug.brightness_p, seed + 18, "brightness", tf.multiply,
                   lambda: _uniform(aug.brightness_range[0], aug.brightness_range[1], seed + 19), image, x)
    image = _maybe(aug.contrast_p, seed + 20, "contrast", _contrast,
                   lambda: _uniform(aug.contrast_range[0], aug.contrast_range[1], seed + 21), image, x)
    image = _maybe(aug.lowres_p, seed + 22, "lowres", _low_resolution,  # tf.image.resize: not under XLA
                   lambda: _uniform(aug.lowres_zoom[0], aug.lowres_zoom[1], seed + 23), image, False)
    return _maybe(aug.gamma_p, seed + 24, "gamma", _gamma,
                  lambda: _uniform(aug.gamma_range[0], aug.gamma_range[1], seed + 25), image, x)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    patch_size: tuple[int, int, int]
    foreground_share: float = 0.33
    # what a foreground patch is centred on: any tumour voxel, or a voxel of a tumour class drawn first
    # (nnU-Net); "voxel" here keeps runs configured before the field sampling as they did
    foreground_pick: str = "voxel"
    flips: bool = True
    rotation: bool = False
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    xla: bool = True  # fuse crop/flips/cast/intensity of the image into one XLA kernel (same result, faster)
    # nnU-Net-style transforms, each applied to a sample with its probability (0: off, and free)
    rotate_p: float = 0.0  # rotation by any angle about each axis, up to +-rotate_max_deg
    rotate_max_deg: float = 30.0
    scale_p: float = 0.0  # zoom by a factor in scale_range (> 1 magnifies)
    scale_range: tuple[float, float] = (0.7, 1.4)
    elastic_p: float = 0.0  # smooth random displacement, std elastic_magnitude voxels on a 5^3 control grid
    elastic_magnitude: float = 4.0
    noise_p: float = 0.0  # Gaussian noise, std drawn in [0, noise_std]
    noise_std: float = 0.1
    blur_p: float = 0.0  # Gaussian blur, sigma in blur_sigma voxels
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_p: float = 0.0  # multiply by a factor in brightness_range
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_p: float = 0.0  # spread around the mean by a factor in contrast_range
    contrast_range: tuple[float, float] = (0.75, 1.25)
    lowres_p: float = 0.0  # down to a zoom in lowres_zoom and back up
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    gamma_p: float = 0.0  # x**gamma on the channel's range, gamma in gamma_range
    gamma_range: tuple[float, float] = (0.7, 1.5)

    def __post_init__(self):
        if self.foreground_pick not in FOREGROUND_PICKS:
            raise ValueError(f"augment.foreground_pick must be one of {list(FOREGROUND_PICKS)}, "
                             f"got {self.foreground_pick!r}")
        bad = {f: getattr(self, f) for f in PROBABILITIES if not 0.0 <= getattr(self, f) <= 1.0}
        if bad:
            raise ValueError(f"augmentation probabilities must be in [0, 1], got {bad}")
        for field in RANGES:
            low, high = getattr(self, field)
            if low > high:
                raise ValueError(f"augment.{field} must be (low, high) with low <= high, got {(low, high)}")

    @property
    def spatial(self) -> bool:
        return bool(self.rotate_p or self.scale_p or self.elastic_p)

    @classmethod
    def from_config(cls, cfg) -> "AugmentConfig":
        """From a trainer config; fields it lacks (a run configured before they existed) keep their defaults."""
        a = cfg["augment"]
        optional = {f: (tuple(float(v) for v in a[f]) if f in RANGES else float(a[f]))
                    for f in (*PROBABILITIES, *RANGES, *SCALARS) if f in a}
        return cls(patch_size=tuple(int(p) for p in cfg["patch_size"]), foreground_share=float(a["foreground_share"]),
                   flips=bool(a["flips"]), rotation=bool(a["rotation"]),
                   intensity_scale=float(a["intensity_scale"]), intensity_shift=float(a["intensity_shift"]),
                   xla=bool(a.get("xla", True)), foreground_pick=str(a.get("foreground_pick", "voxel")),
                   **optional)


# nnU-Net's default probabilities (its 3d_fullres recipe; elastic off there too): configs/train/unet3d.py
NNUNET_AUGMENT = {"rotate_p": 0.2, "scale_p": 0.2, "noise_p": 0.1, "blur_p": 0.2, "brightness_p": 0.15,
                  "contrast_p": 0.15, "lowres_p": 0.25, "gamma_p": 0.3}
# Every transform on, elastic included (benchmarks/bench_input.py --full_augment)
FULL_AUGMENT = {**NNUNET_AUGMENT, "elastic_p": 0.2}

PROBABILITIES = ("rotate_p", "scale_p", "elastic_p", "noise_p", "blur_p", "brightness_p", "contrast_p", "lowres_p",
                 "gamma_p")
RANGES = ("scale_range", "blur_sigma", "brightness_range", "contrast_range", "lowres_zoom", "gamma_range")
SCALARS = ("rotate_max_deg", "elastic_magnitude", "noise_std")


def augment(example, seed, aug: AugmentConfig, mask_dtype=tf.float32):
    """One training sample: patch (+ rotation/scaling/elastic), flips, 90-degree rotation, intensity; returns (float32 image, mask).

    A volume smaller than the patch on some axis is padded to it first (:func:`pad_to_patch`).

    ``example["image"]`` may be float16 (as stored) or float32; the random
    draws use ``seed`` (patch), ``seed + 3`` (flips), ``seed + 4`` (rotation)
    and ``seed + 5``/``+ 6`` (intensity scale/shift).  Intensity is applied
    before the rotation: it is a per-voxel map, so the order does not change
    the result.  The nnU-Net-style transforms draw from ``seed + 7`` to
    ``seed + 25``: spatial ones as part of the patch's resampling, the rest
    (:func:`intensity_transforms`) on the float32 patch.
    """
    patch = tuple(int(p) for p in aug.patch_size)
    image, mask = pad_to_patch(example["image"], example["mask"], patch)
    # a cached record carries its tumour voxels (trainer.data.decoded_cache)
    index = shift_index(example, example["mask"], patch) if TUMOUR_VOXELS in example else None
    start = _patch_start(mask, patch, aug.foreground_share, seed, aug.foreground_pick, index)
    flip = _flip_coins(seed + 3) if aug.flips else tf.zeros([3], tf.bool)
    channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
    if aug.intensity_scale or aug.intensity_shift:
        scale, shift = _intensity_draws(channels, aug.intensity_scale, aug.intensity_shift, seed + 5)
    else:
        scale, shift = tf.ones([channels], tf.float32), tf.zeros([channels], tf.float32)

    def cropped():
        return (_image_patch(image, start, patch, flip, scale, shift, aug.xla),
                _crop_flip(mask, start, patch, flip if aug.flips else None))

    if aug.spatial:
        apply, elastic, matrix, grid = _spatial_draws(aug, seed)
        centre = tf.cast(start, tf.float32) + (tf.constant(patch, tf.float32) - 1.0) / 2.0

        def warp_with(field_grid):
            return lambda: _warp(image, mask, centre, matrix, field_grid, patch, flip, scale, shift, aug.xla)

        def warped():  # the affine kernel (no displacement) unless the elastic coin says yes
            if aug.elastic_p > 0:
                return tf.cond(elastic, warp_with(grid), warp_with(None))
            return warp_with(None)()

        image, mask = tf.cond(apply, warped, cropped)
    else:
        image, mask = cropped()
    if aug.rotation:
        image, mask = random_axial_rotation(image, mask, seed + 4)
    image = intensity_transforms(image, aug, seed)
    return image, tf.cast(mask, mask_dtype)
