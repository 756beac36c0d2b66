"""tf.data input pipelines over a verified dataset version.

Training, one epoch after another, each seeded from (seed, epoch): this
pipeline's share of the shard files, shuffled -> parallel interleave of
TFRecordDatasets (GZIP or uncompressed, as the manifest's record.compression
says) [or the share cached in memory] -> shuffle -> the epoch's samples ->
parse (shared schema) + augment -> batch -> prefetch.  Validation: whole cropped volumes, no
augmentation, in manifest order.

The records are parsed by ``shared.schema.parse_tf`` only; nothing here knows
the byte layout.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from shared import manifest as manifest_lib
from shared import schema
from shared.spec import PreprocessingSpec


class DatasetError(Exception):
    """The dataset directory cannot be trained on (missing, unverifiable, unsuitable)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    data_dir: str
    version_id: str
    manifest_sha256: str
    channels: tuple[str, ...]
    num_classes: int
    challenge: str  # registry name (shared/challenges.py): labels, regions, numbering
    volume_shape: tuple[int, int, int]  # cropped grid of every record
    train_files: tuple[str, ...]
    val_files: tuple[str, ...]
    num_train: int
    num_val: int
    compression: str = manifest_lib.DEFAULT_COMPRESSION  # of the shards: "GZIP" or "NONE" (manifest record.compression)
    folds: dict = dataclasses.field(default_factory=dict, compare=False)  # manifest "folds": training patient -> fold
    fold: int | None = None  # the cross-validation fold this view trains for (None: the manifest's splits)
    # Patient filters of a fold view (empty: every record of the files): the
    # folds share the training shards, so a fold is a filter on patient id.
    train_patients: tuple[str, ...] = ()
    val_patients: tuple[str, ...] = ()


def open_dataset(data_dir: str, verify: bool = True) -> DatasetInfo:
    """Read and (by default) verify the manifest; refuse anything unusable."""
    try:
        manifest = manifest_lib.read_manifest(data_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(str(exc)) from None
    if verify:
        problems = manifest_lib.verify(data_dir, manifest)
        if problems:
            listed = "\n  ".join(str(p) for p in problems[:10])
            raise DatasetError(f"{data_dir} does not match its manifest ({len(problems)} problem(s)):\n  {listed}\n"
                               "Re-run beam_pipeline.preprocess, or check python -m beam_pipeline.verify.")
    splits = manifest["splits"]
    if not splits["train"]["patients"]:
        raise DatasetError(f"{data_dir} has no training patients")
    try:
        compression = manifest_lib.record_compression(manifest)
    except ValueError as exc:
        raise DatasetError(f"{data_dir}: {exc}") from None
    try:
        preprocessing = PreprocessingSpec.from_config(manifest["config"])
        shape = preprocessing.crop_shape
    except (KeyError, ValueError) as exc:
        raise DatasetError(f"{data_dir}: the manifest's preprocessing config is unusable: {exc}") from None
    return DatasetInfo(
        data_dir=data_dir,
        version_id=manifest["version_id"],
        manifest_sha256=manifest_lib.manifest_sha256(data_dir),
        channels=tuple(manifest["record"]["channels"]),
        num_classes=len(manifest["record"]["classes"]),
        challenge=preprocessing.challenge.name,
        volume_shape=tuple(int(s) for s in shape),
        train_files=tuple(manifest_lib.shard_paths(data_dir, manifest, "train")),
        val_files=tuple(manifest_lib.shard_paths(data_dir, manifest, "val")),
        num_train=len(splits["train"]["patients"]),
        num_val=len(splits["val"]["patients"]),
        compression=compression,
        folds={str(p): int(k) for p, k in (manifest.get("folds") or {}).items()},
    )


def num_folds(info: DatasetInfo) -> int:
    """How many cross-validation folds the manifest assigns (0: none)."""
    return max(info.folds.values()) + 1 if info.folds else 0


def fold_patients(folds: dict, fold: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training, validation) patients of ``fold``: it validates, every other fold trains."""
    train = tuple(sorted(p for p, k in folds.items() if k != fold))
    val = tuple(sorted(p for p, k in folds.items() if k == fold))
    return train, val


def with_fold(info: DatasetInfo, fold: int) -> DatasetInfo:
    """The dataset as cross-validation fold ``fold`` sees it.

    Fold ``fold`` of the manifest's training patients validates and the other
    folds train; the manifest's own val split stays held out (never read), so
    it can still score the ensemble of the folds on patients none of them saw.
    Both come from the training shards, filtered by patient id.
    """
    count = num_folds(info)
    if not count:
        raise DatasetError(f"{info.data_dir} has no cross-validation folds (its manifest has no 'folds'): "
                           "preprocess it with --config.split.num_folds=5 (or another k > 1)")
    if not 0 <= fold < count:
        raise DatasetError(f"fold {fold} does not exist: {info.data_dir} has {count} folds (0..{count - 1})")
    train, val = fold_patients(info.folds, fold)
    if not train or not val:
        raise DatasetError(f"fold {fold} of {info.data_dir} leaves {len(train)} training and {len(val)} "
                           "validation patients: each needs at least one")
    return dataclasses.replace(info, fold=fold, val_files=info.train_files, train_patients=train, val_patients=val,
                               num_train=len(train), num_val=len(val))


def _only_patients(ds: tf.data.Dataset, patients: tuple[str, ...]) -> tf.data.Dataset:
    """The serialised records of ``patients`` only (parses just the id of each record)."""
    if not patients:
        return ds
    wanted = tf.constant(list(patients))
    feature = {"patient_id": tf.io.FixedLenFeature([], tf.string)}

    def keep(serialized):
        pid = tf.io.parse_single_example(serialized, feature)["patient_id"]
        return tf.reduce_any(tf.equal(wanted, pid))

    return ds.filter(keep)


# ----------------------------------------------------------------------------- augmentation
#
# Cost matters here: on a CPU host the input pipeline shares the cores with
# training.  Every step works on the patch, never on the whole volume: the
# image stays float16 until it is cropped, the one-hot mask (4 x uint8 per
# voxel) is cropped and flipped as one uint32 per voxel, and crop, flips,
# float32 cast and intensity run as one fused XLA kernel (``xla=True``), which
# is about 6x cheaper than the same ops one by one (channels-last broadcasts
# over 3 channels are slow in TensorFlow's CPU kernels).  Tumour voxels are
# listed only for the patches that are to be centred on one.


def _patch_start(mask, patch, foreground_share, seed):
    """Start corner of a patch; with probability ``foreground_share`` centred on a tumour voxel."""
    shape = tf.shape(mask)[:3]
    patch = tf.constant(patch, tf.int32)
    coin = tf.random.stateless_uniform([], seed=seed)

    def anywhere():
        high = tf.maximum(shape - patch + 1, 1)
        return tf.cast(tf.random.stateless_uniform([3], seed=seed + 2) * tf.cast(high, tf.float32), tf.int32)

    def on_tumour():
        tumour = tf.where(mask[..., 0] == 0)  # background class is channel 0
        n = tf.shape(tumour)[0]

        def pick():
            i = tf.random.stateless_uniform([], seed=seed + 1, maxval=n, dtype=tf.int32)
            return tf.cast(tumour[i], tf.int32) - patch // 2

        return tf.cond(n > 0, pick, anywhere)

    start = tf.cond(coin < foreground_share, on_tumour, anywhere)
    return tf.clip_by_value(start, 0, tf.maximum(shape - patch, 0))


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
#
# Why gathers and not separable passes: a 128^3 patch of 4 channels costs
# about 0.15-0.3 CPU-s this way (benchmarks/bench_spatial.py), while one
# 2-D pass of tf.raw_ops.ImageProjectiveTransformV3 over the 144^3 x 4 volume
# alone costs 0.16-0.22 CPU-s, so a rotation as three 2-D passes (plus three for
# the mask, whose three successive nearest-neighbour roundings would also
# misplace labels) could not be cheaper.

_SPATIAL_KERNELS: dict = {}


def _rotation_matrix(angles):
    """3x3 rotation: about axis 0, then 1, then 2 (radians)."""
    c, s = tf.cos(angles), tf.sin(angles)
    one, zero = tf.ones([]), tf.zeros([])
    rx = tf.stack([[one, zero, zero], [zero, c[0], -s[0]], [zero, s[0], c[0]]])
    ry = tf.stack([[c[1], zero, s[1]], [zero, one, zero], [-s[1], zero, c[1]]])
    rz = tf.stack([[c[2], -s[2], zero], [s[2], c[2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def _resize3d(volume, size, method):
    """(D, H, W, C) -> size + (C,): two 2-D resizes (first D, H, then W)."""
    d, h, w, c = (tf.shape(volume)[i] for i in range(4))
    first = tf.image.resize(tf.reshape(volume, [d, h, w * c]), size[:2], method=method)
    first = tf.reshape(first, [size[0] * size[1], w, 1, c])
    second = tf.image.resize(first, tf.stack([size[2], 1]), method=method)
    return tf.reshape(second, tf.concat([size, [c]], 0))


ELASTIC_POINTS = 5  # control points per axis of the elastic displacement


def _elastic_grid(magnitude, seed, points=ELASTIC_POINTS):
    """The random part of an elastic deformation: normal displacements (voxels) on a coarse points^3 grid."""
    return tf.random.stateless_normal([points, points, points, 3], seed=seed) * magnitude


def _linear_upsampling(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of linear upsampling as ``tf.image.resize(..., "bilinear")`` does it:
    half-pixel centres, clamped at the ends."""
    source = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    weights = np.zeros((size_out, size_in), np.float32)
    np.add.at(weights, (np.arange(size_out), low), 1 - (source - low))
    np.add.at(weights, (np.arange(size_out), high), source - low)
    return weights


def _elastic_field(grid, patch):
    """Displacement (voxels) of every patch voxel, ``patch + (3,)``: the coarse grid linearly upsampled.

    Three small matrix products, one per axis, so it runs inside the spatial
    XLA kernel and only the points^3 x 3 grid enters it (``tf.image.resize``
    has no fused CPU path, and a patch-sized field is 24 MB to pass around).
    """
    points = grid.shape[0]
    w0, w1, w2 = (tf.constant(_linear_upsampling(points, size)) for size in patch)
    field = tf.einsum("kc,abcd->abkd", w2, grid)
    field = tf.einsum("jb,abkd->ajkd", w1, field)
    return tf.einsum("ia,ajkd->ijkd", w0, field)


def _mirrored(field, flip):
    """``field`` reversed along each axis ``flip`` flags (a select per axis: XLA needs static axes)."""
    for axis in range(3):
        field = tf.where(flip[axis], tf.reverse(field, [axis]), field)
    return field


def _source_coordinates(patch, centre, matrix, flip, displacement=None):
    """(N, 3) volume coordinates of the patch voxels, in row-major order over ``patch``.

    Voxel v reads ``centre + matrix @ (F(v - patch centre) + d(Fv))``, where F
    mirrors the axes ``flip`` flags: the patch comes out flipped because its
    offsets are, so no flip pass over the patches is needed afterwards.  Built
    as a sum of three broadcast axis terms, not from a meshgrid, so XLA has no
    patch-sized constant to fold.
    """
    coords = tf.reshape(tf.cast(centre, tf.float32), [1, 1, 1, 3])
    if displacement is not None:
        displacement = _mirrored(displacement, flip)
        coords += sum(displacement[..., k:k + 1] * matrix[:, k] for k in range(3))
    signs = tf.where(flip, -1.0, 1.0)
    for axis, size in enumerate(patch):
        offsets = (tf.range(size, dtype=tf.float32) - (size - 1) / 2.0) * signs[axis]
        shape = [1, 1, 1, 3]
        shape[axis] = size
        coords += tf.reshape(offsets[:, None] * matrix[:, axis][None, :], shape)
    coords = tf.broadcast_to(coords, [*patch, 3])
    return tf.reshape(coords, [-1, 3])


def _flat_index(index, shape):
    return (index[:, 0] * shape[1] + index[:, 1]) * shape[2] + index[:, 2]


def _sample_linear(volume, coords):
    """Trilinear read of a (D, H, W, C) volume at (N, 3) coordinates; 0 outside -> (N, C) float32.

    The volume gets a border of zeros (one voxel before, two after) and the
    coordinates are clamped into it, so a corner outside the volume reads 0
    with no per-corner test.  Eight gathers of one voxel's channel row each,
    in the stored dtype, cast after: XLA's CPU gather copies a row per index
    quickly.  Packing a voxel's channels into one 64-bit word and pairing
    neighbours in two-word rows (4 gathers), the previous version, was 4x
    slower with 4 channels and 10x with 3 (benchmarks/bench_spatial.py).
    """
    padded = tf.pad(volume, [[1, 2], [1, 2], [1, 2], [0, 0]])
    shape = tf.shape(padded)[:3]
    flat = tf.reshape(padded, [-1, tf.shape(volume)[-1]])
    coords = tf.clip_by_value(coords + 1.0, 0.0, tf.cast(shape - 2, tf.float32))  # +1: the border
    low = tf.floor(coords)
    frac = coords - low
    base = _flat_index(tf.cast(low, tf.int32), shape)
    total = 0.0
    for corner in range(8):
        step = ((corner >> 2) & 1, (corner >> 1) & 1, corner & 1)
        weight = 1.0
        for axis in range(3):
            weight *= frac[:, axis:axis + 1] if step[axis] else 1.0 - frac[:, axis:axis + 1]
        values = tf.gather(flat, base + (step[0] * shape[1] + step[1]) * shape[2] + step[2])
        total += weight * tf.cast(values, tf.float32)
    return total


def _inside(index, shape):
    return tf.reduce_all((index >= 0) & (index < shape), axis=-1)


def _sample_nearest(mask, coords):
    """Nearest-neighbour read of a one-hot (D, H, W, K) mask; background outside -> (N, K).

    A uint8 mask of 4 classes moves as one uint32 word per voxel (a gather
    costs per index, not per byte).
    """
    shape = tf.shape(mask)[:3]
    index = tf.cast(tf.round(coords), tf.int32)
    flat_index = _flat_index(tf.clip_by_value(index, 0, shape - 1), shape)
    if mask.dtype == tf.uint8 and mask.shape[-1] == 4:
        values = tf.bitcast(tf.gather(tf.reshape(tf.bitcast(mask, tf.uint32), [-1]), flat_index), tf.uint8)
    else:
        values = tf.gather(tf.reshape(mask, [-1, tf.shape(mask)[-1]]), flat_index)
    background = tf.one_hot(0, tf.shape(mask)[-1], dtype=mask.dtype)
    return tf.where(_inside(index, shape)[:, None], values, background[None])


def _sample_patch(image, mask, coords, patch):
    """The patch's image (trilinear, float32) and mask (nearest) read at ``coords``."""
    channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
    image = tf.reshape(_sample_linear(image, coords), [*patch, channels])
    mask = tf.reshape(_sample_nearest(mask, coords), [*patch, tf.shape(mask)[-1]])
    return image, mask


def _warp_coordinates(centre, matrix, flip, grid, patch):
    """:func:`_source_coordinates` with the elastic displacement of the coarse ``grid`` (None: none)."""
    displacement = None if grid is None else _elastic_field(grid, patch)
    return _source_coordinates(patch, centre, matrix, flip, displacement)


def _spatial_kernel(key, ops):
    kernel = _SPATIAL_KERNELS.get(key)
    if kernel is None:
        kernel = _SPATIAL_KERNELS[key] = tf.function(ops, jit_compile=True, autograph=False)
    return kernel


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
        coords = _warp_coordinates(centre, matrix, flip, grid, patch)
        image, mask = _sample_patch(image, mask, coords, patch)
        return _scale_shift_in_brain(image, scale, shift), mask
    if grid is None:
        coords = _spatial_kernel(("affine", patch), lambda c, r, f: _warp_coordinates(c, r, f, None, patch))(
            centre, matrix, flip)
    else:
        coords = _spatial_kernel(("elastic", patch), lambda c, r, f, g: _warp_coordinates(c, r, f, g, patch))(
            centre, matrix, flip, grid)
    image, mask = _spatial_kernel(("sample", patch), lambda i, m, c: _sample_patch(i, m, c, patch))(
        image, mask, coords)
    return _spatial_kernel(("intensity", patch), _scale_shift_in_brain)(image, scale, shift), mask


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
    matrix = _rotation_matrix(angles) / zoom  # zoom > 1 magnifies: the patch reads a smaller box
    grid = _elastic_grid(aug.elastic_magnitude, seed + 12)
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
    return _resize3d(_resize3d(image, small, "nearest"), size, "bilinear")


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
                   xla=bool(a.get("xla", True)), **optional)


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

    ``example["image"]`` may be float16 (as stored) or float32; the random
    draws use ``seed`` (patch), ``seed + 3`` (flips), ``seed + 4`` (rotation)
    and ``seed + 5``/``+ 6`` (intensity scale/shift).  Intensity is applied
    before the rotation: it is a per-voxel map, so the order does not change
    the result.  The nnU-Net-style transforms draw from ``seed + 7`` to
    ``seed + 25``: spatial ones as part of the patch's resampling, the rest
    (:func:`intensity_transforms`) on the float32 patch.
    """
    image, mask = example["image"], example["mask"]
    patch = tuple(int(p) for p in aug.patch_size)
    start = _patch_start(mask, patch, aug.foreground_share, seed)
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


# ----------------------------------------------------------------------------- pipelines


@dataclasses.dataclass(frozen=True)
class Shard:
    """Which share of the training records one input pipeline reads: ``index`` of ``count``.

    Under multi-worker training every worker builds its own pipeline; each
    reads only its share, so no worker decompresses, parses or augments a
    record another worker will train on.
    """

    count: int = 1
    index: int = 0

    def __post_init__(self):
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in [0, {self.count})")


def epoch_seed(seed: int, epoch):
    """The seed of one epoch's shuffles and augmentation, from (run seed, epoch) only.

    So a resumed run draws for epoch k what an uninterrupted run draws there,
    instead of restarting the random stream at epoch 0.  The factor 7919
    keeps ``epoch_seed + k`` (augment offsets its draws by up to 25) away from
    the next epoch's seed.
    """
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64) * 7919


def _by_record(info: DatasetInfo, shard: Shard) -> bool:
    """Fewer shard files than pipelines, or a fold view: split by record index instead of by file.

    A fold's patients are spread over the shards unevenly, so splitting by
    file could leave a worker files without one record of its fold.
    """
    return shard.count > 1 and (len(info.train_files) < shard.count or bool(info.train_patients))


def _share_files(info: DatasetInfo, shard: Shard) -> list[str]:
    files = list(info.train_files)
    return files if shard.count == 1 or _by_record(info, shard) else files[shard.index::shard.count]


def check_shard(info: DatasetInfo, shard: Shard) -> None:
    """Every pipeline needs records to read, or its epochs never fill."""
    if info.num_train < shard.count:
        raise DatasetError(f"{info.num_train} training patient(s) cannot be shared among {shard.count} workers")


def _permuted(values, seed):
    """``values`` (along axis 0) in an order drawn from a stateless ``seed`` pair.

    Stateless on purpose: ``Dataset.shuffle`` with a tensor seed fails in a
    traced function when the global seed is 0 (``keras.utils.set_random_seed(0)``),
    and the order must depend on (seed, epoch) only.
    """
    keys = tf.random.stateless_uniform(tf.shape(values)[:1], seed=seed)
    return tf.gather(values, tf.argsort(keys))


def _seed_pair(first, second):
    return tf.stack([tf.cast(first, tf.int64), tf.cast(second, tf.int64)])


def _share_records(info: DatasetInfo, shard: Shard, file_seed, deterministic: bool, cycle_length=4):
    """This pipeline's serialised records; files in an order drawn from ``file_seed`` (None: manifest order).

    Splitting by record index needs the same record order on every worker:
    the file order comes from the same seed everywhere, and the interleave is
    then kept deterministic.
    """
    files = tf.constant(_share_files(info, shard))
    if file_seed is not None:
        files = _permuted(files, file_seed)
    kind = manifest_lib.tf_compression_type(info.compression)
    by_record = _by_record(info, shard)
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=kind),
        cycle_length=min(cycle_length, int(files.shape[0])), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic or by_record)
    ds = _only_patients(ds, info.train_patients)  # before sharding: every worker filters the same order
    return ds.shard(shard.count, shard.index) if by_record else ds


def _block_shuffle(ds: tf.data.Dataset, size: int, seed) -> tf.data.Dataset:
    """Shuffle within consecutive blocks of ``size`` records, each block with its own stateless draw."""
    blocks = ds.batch(size).enumerate()
    return blocks.map(lambda i, block: _permuted(block, _seed_pair(seed, i))).unbatch()


def _one_pass(info, shard, seed, shuffle_buffer, cached, deterministic):
    """One pass over the share, ordered by ``seed`` (a pair): all of it at once when cached, else by block.

    Cached, the whole share is batched and permuted, which also reads the
    cache to its end on the first pass, so TensorFlow keeps it.
    """
    if cached is not None:
        return _block_shuffle(cached, max(info.num_train, 1), seed[0] + 1)
    records = _share_records(info, shard, seed, deterministic)
    return _block_shuffle(records, shuffle_buffer, seed[0] + 2)


def epoch_records(info: DatasetInfo, epoch, seed: int = 0, shard: Shard = Shard(), samples: int | None = None,
                  shuffle_buffer: int = 16, cached: tf.data.Dataset | None = None,
                  deterministic: bool = False) -> tf.data.Dataset:
    """The serialised records one pipeline trains on in ``epoch``: ``samples`` of them (None: one pass).

    Everything random here is drawn from :func:`epoch_seed` and the pass
    number within the epoch, so each pass of each epoch has its own order.
    ``cached``: this share's records held in memory (``data.cache``).
    """
    check_shard(info, shard)
    e_seed = epoch_seed(seed, epoch)
    if samples is None:
        return _one_pass(info, shard, _seed_pair(e_seed, 0), shuffle_buffer, cached, deterministic)
    passes = tf.data.Dataset.counter().flat_map(
        lambda p: _one_pass(info, shard, _seed_pair(e_seed, p), shuffle_buffer, cached, deterministic))
    return passes.take(samples)


def _parse_stored(info: DatasetInfo, serialized):
    """A record as stored (float16 image, uint8 one-hot mask), with the static shapes of this version."""
    example = schema.parse_tf(serialized, image_dtype=tf.float16)
    shape = list(info.volume_shape)
    example["image"] = tf.ensure_shape(example["image"], shape + [len(info.channels)])
    example["mask"] = tf.ensure_shape(example["mask"], shape + [info.num_classes])
    return example


def _sample_seed(epoch, index, seed: int):
    """A stateless seed per training sample: (epoch seed, position in the epoch)."""
    return tf.stack([tf.cast(epoch_seed(seed, epoch) % (2**31 - 1), tf.int32), tf.cast(index, tf.int32)])


def train_dataset(info: DatasetInfo, batch_size: int, aug: AugmentConfig, seed: int = 0,
                  shuffle_buffer: int = 16, cache: bool = False, deterministic: bool = False,
                  samples_per_epoch: int | None = None, first_epoch: int = 0,
                  shard: Shard = Shard()) -> tf.data.Dataset:
    """Endless stream of augmented (float32 image patch, float32 one-hot mask patch) batches.

    The stream is a sequence of epochs from ``first_epoch`` on, each of
    ``samples_per_epoch`` samples (None: one pass over the share) drawn by
    :func:`epoch_records` and augmented with per-sample seeds from (seed,
    epoch, position): a run resumed at epoch k sees the data an uninterrupted
    run sees there.  ``samples_per_epoch`` must be what the trainer consumes
    per epoch from this pipeline, so epochs and training epochs line up.
    """
    check_patch_fits(aug.patch_size, info.volume_shape)
    # serialised records (float16): about half the decoded size
    cached = _share_records(info, shard, None, True).cache() if cache else None

    def one_epoch(epoch):
        records = epoch_records(info, epoch, seed, shard, samples_per_epoch, shuffle_buffer, cached, deterministic)
        return records.enumerate().map(
            lambda i, r: augment(_parse_stored(info, r), _sample_seed(epoch, i, seed), aug),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

    ds = tf.data.Dataset.counter(start=first_epoch).flat_map(one_epoch)
    # parallel batching: each sample's copy into the batch (~60 MB at 128^3) runs on its own thread
    ds = ds.batch(batch_size, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(tf.data.AUTOTUNE)


def val_dataset(info: DatasetInfo, batch_size: int = 1) -> tf.data.Dataset:
    """Whole cropped validation volumes, no augmentation, fixed order (a fold view: its fold's patients)."""
    files = info.val_files or info.train_files
    ds = tf.data.TFRecordDataset(list(files), compression_type=manifest_lib.tf_compression_type(info.compression))
    ds = _only_patients(ds, info.val_patients)
    ds = ds.map(lambda r: _image_mask(schema.parse_tf(r)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _image_mask(example):
    return example["image"], tf.cast(example["mask"], tf.float32)


def check_patch_fits(patch, volume_shape) -> None:
    if any(p > v for p, v in zip(patch, volume_shape)):
        raise DatasetError(f"patch size {tuple(patch)} is larger than the dataset's volumes {tuple(volume_shape)}")
