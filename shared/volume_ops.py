"""Volume operations that training data and prediction must apply identically.

Boxes are ``((start0, stop0), (start1, stop1), (start2, stop2))`` in voxel
indices of the source grid.  A box may reach outside the volume (for scans
smaller than the crop size, or a ``bbox`` margin beyond the scan's edge);
cropping pads with zeros there and uncropping drops those voxels, so
:func:`uncrop` is the exact inverse of :func:`crop` on the voxels the box
covers.
"""

from __future__ import annotations

import numpy as np

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def nonzero_brain_mask(volumes: list[np.ndarray]) -> np.ndarray:
    """Voxels non-zero in any modality.

    BraTS volumes are skull-stripped with background exactly 0, so this is the
    brain, at no cost (``ants.get_mask`` takes seconds per volume).
    """
    mask = np.zeros(volumes[0].shape, dtype=bool)
    for volume in volumes:
        mask |= volume != 0
    return mask


def bounding_box(mask: np.ndarray) -> Box:
    """Smallest box holding every true voxel; raises on an empty mask."""
    if not mask.any():
        raise ValueError("mask is empty")
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def centered_box(mask: np.ndarray, size: tuple[int, int, int]) -> Box:
    """A box of ``size`` centred on the mask's bounding box.

    The box is shifted back inside the volume where it fits, so it only
    reaches outside (and pads) when the volume is smaller than ``size``.
    """
    box = []
    for (lo, hi), extent, dim in zip(bounding_box(mask), size, mask.shape):
        start = (lo + hi) // 2 - extent // 2
        if extent <= dim:
            start = min(max(start, 0), dim - extent)
        else:
            start = -((extent - dim) // 2)
        box.append((int(start), int(start + extent)))
    return tuple(box)  # type: ignore[return-value]


def brain_box(mask: np.ndarray, size: tuple[int, int, int]) -> Box:
    """The ``brain`` crop: a box of ``size`` (the record shape) centred on the brain's bounding box.

    The brain is the non-zero voxels of every channel, so a tumour anywhere
    in the brain stays in the record as long as the brain's extent fits in
    ``size``: configs choose ``size`` to hold the brains of their grid with a
    margin (and as a multiple of the U-Net's downsampling, at least the
    training patch), as nnU-Net crops to the non-zero region and pads to
    the patch.  One size for every record keeps batches, whole-volume
    validation and the serving window shape-static.  Where the volume is
    smaller the box reaches outside and :func:`crop` pads with zeros.
    """
    return centered_box(mask, size)


def bbox_box(mask: np.ndarray, margin: int, multiple: int, min_size: tuple[int, int, int]) -> Box:
    """The ``bbox`` crop: the brain's bounding box, ``margin`` voxels wider on each side, then grown
    symmetrically on each axis to at least ``min_size`` and to a multiple of ``multiple``.

    As nnU-Net crops to the non-zero region: every voxel of the brain (so
    every tumour voxel) stays in the record whatever the head's size or
    position, and no record carries more air than the margin and the
    rounding add.  Records then differ in shape per patient; ``multiple``
    (16 for a U-Net of depth 5) lets the network run on a whole record, and
    the trainer pads a record smaller than its patch.  The box may reach
    outside the volume: :func:`crop` pads with zeros there and
    :func:`uncrop` drops those voxels.
    """
    box = []
    for (lo, hi), least in zip(bounding_box(mask), min_size):
        lo, hi = lo - int(margin), hi + int(margin)
        extent = max(hi - lo, int(least))
        extent = -(-extent // int(multiple)) * int(multiple)
        lo -= (extent - (hi - lo)) // 2
        box.append((int(lo), int(lo + extent)))
    return tuple(box)  # type: ignore[return-value]


def fixed_box(box, shape: tuple[int, ...]) -> Box:
    """Validate a configured box against a volume shape."""
    box = tuple((int(a), int(b)) for a, b in box)
    if len(box) != 3 or any(b <= a for a, b in box):
        raise ValueError(f"crop box {box} is not three (start, stop) pairs with stop > start")
    for (a, b), dim in zip(box, shape[:3]):
        if b <= 0 or a >= dim:
            raise ValueError(f"crop box {box} lies outside the volume of shape {tuple(shape[:3])}")
    return box  # type: ignore[return-value]


def _slices(box: Box, shape) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Source and destination slices of the part of ``box`` inside ``shape``."""
    src, dst = [], []
    for (a, b), dim in zip(box, shape[:3]):
        lo, hi = max(a, 0), min(b, dim)
        src.append(slice(lo, hi))
        dst.append(slice(lo - a, hi - a))
    return tuple(src), tuple(dst)


def crop(volume: np.ndarray, box: Box) -> np.ndarray:
    """Cut ``box`` out of ``volume`` (extra trailing axes kept), zero-padding outside."""
    out_shape = tuple(b - a for a, b in box) + volume.shape[3:]
    src, dst = _slices(box, volume.shape)
    if all(d.stop - d.start == o for d, o in zip(dst, out_shape)):
        return volume[src].copy()
    out = np.zeros(out_shape, dtype=volume.dtype)
    out[dst] = volume[src]
    return out


def uncrop(cropped: np.ndarray, box: Box, original_shape, fill=0) -> np.ndarray:
    """Place a cropped volume back into a volume of ``original_shape``."""
    out = np.full(tuple(original_shape[:3]) + cropped.shape[3:], fill, dtype=cropped.dtype)
    src, dst = _slices(box, original_shape)
    out[src] = cropped[dst]
    return out


def zscore(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the brain; background set to 0 (float32).

    Statistics over brain voxels only: including the background, as the seeds
    did, makes the result depend on how much air the crop box holds.
    """
    values = volume[mask].astype(np.float64)
    if values.size == 0:
        raise ValueError("empty brain mask")
    std = values.std()
    if not np.isfinite(std) or std == 0:
        raise ValueError("constant intensity inside the brain (standard deviation 0)")
    out = np.zeros(volume.shape, dtype=np.float32)
    out[mask] = ((values - values.mean()) / std).astype(np.float32)
    return out


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis, from a NIfTI affine."""
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def header_spacing(image) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis from a NIfTI header's zooms (pixdim).

    The spacing every reference tool reads (nibabel ``get_zooms``, SimpleITK
    ``GetSpacing``, the official BraTS package); the affine's column norms
    (:func:`voxel_spacing`) differ by rounding on oblique affines (1.0000000235
    where the header says 1.0), enough to move a one-voxel distance past an
    exact ``<=`` tolerance.
    """
    return tuple(float(z) for z in image.header.get_zooms()[:3])


def resampled_shape(shape, spacing, target) -> tuple[int, int, int]:
    """Voxels per axis after resampling ``shape`` at ``spacing`` mm to ``target`` mm (at least 1)."""
    return tuple(max(1, int(round(n * float(s) / float(t)))) for n, s, t in zip(shape[:3], spacing, target))


def resample(volume: np.ndarray, shape, order: int) -> np.ndarray:
    """``volume`` resampled onto ``shape`` voxels over the same field of view.

    Voxel centres are aligned the way a scanner grid is (``grid_mode``: the
    first and last voxels' outer edges coincide), so resampling there and
    back returns to the same physical positions.  ``order`` 1 (trilinear)
    for images, 0 (nearest) for labels; outside the source the edge value.
    """
    from scipy import ndimage  # numpy-only callers (the app's upload checks) need not load scipy

    shape = tuple(int(n) for n in shape[:3])
    if tuple(volume.shape[:3]) == shape:
        return volume.copy()
    factors = [n / m for n, m in zip(shape, volume.shape[:3])]
    return ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True, prefilter=False)


def resampled_affine(affine: np.ndarray, source_shape, shape) -> np.ndarray:
    """Affine of the grid :func:`resample` produces: same field of view, ``shape`` voxels."""
    scale = np.array([m / n for m, n in zip(source_shape[:3], shape[:3])], dtype=np.float64)
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = 0.5 * scale - 0.5  # voxel i's centre sits at source index (i + 0.5) * scale - 0.5
    return np.asarray(affine, dtype=np.float64) @ step
