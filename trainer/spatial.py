"""The spatial resampling kernel of the nnU-Net-style augmentation: one patch read out of a volume.

Rotation by any angle, scaling, elastic deformation, flips and the crop are
one resampling: each patch voxel's source coordinate in the volume is
computed (:func:`warp_coordinates`) and the image is read there by trilinear
interpolation, the mask by nearest neighbour (:func:`sample_patch`).  It
lives apart from ``trainer.augment`` because it is the numerical core the
augmentation and ``benchmarks/bench_spatial.py`` measure: coordinates,
gathers and XLA kernel cache, with no probabilities or configuration.

Why gathers and not separable passes: a 128^3 patch of 4 channels costs
about 0.15-0.3 CPU-s this way (benchmarks/bench_spatial.py), while one
2-D pass of tf.raw_ops.ImageProjectiveTransformV3 over the 144^3 x 4 volume
alone costs 0.16-0.22 CPU-s, so a rotation as three 2-D passes (plus three for
the mask, whose three successive nearest-neighbour roundings would also
misplace labels) could not be cheaper.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_SPATIAL_KERNELS: dict = {}  # compiled XLA kernels by (role, patch shape)


def rotation_matrix(angles):
    """3x3 rotation: about axis 0, then 1, then 2 (radians)."""
    c, s = tf.cos(angles), tf.sin(angles)
    one, zero = tf.ones([]), tf.zeros([])
    rx = tf.stack([[one, zero, zero], [zero, c[0], -s[0]], [zero, s[0], c[0]]])
    ry = tf.stack([[c[1], zero, s[1]], [zero, one, zero], [-s[1], zero, c[1]]])
    rz = tf.stack([[c[2], -s[2], zero], [s[2], c[2], zero], [zero, zero, one]])
    return rz @ ry @ rx


def resize3d(volume, size, method):
    """(D, H, W, C) -> size + (C,): two 2-D resizes (first D, H, then W)."""
    d, h, w, c = (tf.shape(volume)[i] for i in range(4))
    first = tf.image.resize(tf.reshape(volume, [d, h, w * c]), size[:2], method=method)
    first = tf.reshape(first, [size[0] * size[1], w, 1, c])
    second = tf.image.resize(first, tf.stack([size[2], 1]), method=method)
    return tf.reshape(second, tf.concat([size, [c]], 0))


ELASTIC_POINTS = 5  # control points per axis of the elastic displacement


def elastic_grid(magnitude, seed, points=ELASTIC_POINTS):
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


def sample_patch(image, mask, coords, patch):
    """The patch's image (trilinear, float32) and mask (nearest) read at ``coords``."""
    channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
    image = tf.reshape(_sample_linear(image, coords), [*patch, channels])
    mask = tf.reshape(_sample_nearest(mask, coords), [*patch, tf.shape(mask)[-1]])
    return image, mask


def warp_coordinates(centre, matrix, flip, grid, patch):
    """:func:`_source_coordinates` with the elastic displacement of the coarse ``grid`` (None: none)."""
    displacement = None if grid is None else _elastic_field(grid, patch)
    return _source_coordinates(patch, centre, matrix, flip, displacement)


def spatial_kernel(key, ops):
    kernel = _SPATIAL_KERNELS.get(key)
    if kernel is None:
        kernel = _SPATIAL_KERNELS[key] = tf.function(ops, jit_compile=True, autograph=False)
    return kernel
