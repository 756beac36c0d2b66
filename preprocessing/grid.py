"""What the preprocessing did to one patient's grid, and how to undo it.

The core turns a scan into the network's grid in three steps, each of which
a prediction must undo on the way out: reorientation into the model's
orientation (prediction only, :func:`preprocessing.patient.conform`),
resampling to the dataset's voxel size (native-space cohorts) and the crop
box (zero-padded where the box runs past the grid).  :class:`GridRecord`
holds all three together with the scan as stored (shape, affine, the first
modality's header), and :meth:`GridRecord.invert` puts any array on the
cropped grid (labels, a softmax, a region model's sigmoids) back onto the
scan's own grid, the way MONAI's invertible transforms carry their own
inverse.  Prediction, source-space scoring and the app call only that.

It lives in the core, beside the stages it inverts, rather than in
``shared.geometry``: the forward steps are the core's (crop box, resampling
orders, the reorientation chosen in ``conform``), and an inverse kept next
to them changes with them; serving and evaluation sit above the core and
may import it.  ``shared.geometry`` keeps what every layer needs about
geometry (orientation codes, the model's expected grid, exact flips).

The record is built beside the TFRecord, never in it: the records' bytes
(and so every dataset version) stay as they were.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shared import geometry as geometry_lib, volume_ops

#: What an array on the cropped grid holds, which decides "outside the crop" and the resampling order.
LABELS, SOFTMAX, SIGMOID = "labels", "softmax", "sigmoid"
KINDS = (LABELS, SOFTMAX, SIGMOID)


@dataclasses.dataclass(frozen=True)
class GridRecord:
    """One patient's way from its stored grid to the network's cropped grid.

    ``source_*``: the first modality as stored (every channel shares its
    grid: validated).  ``oriented_shape``: after reorientation, the grid
    the dataset's record calls ``original_shape``.  ``grid_shape``: after
    resampling (== ``oriented_shape`` where nothing was resampled), on
    which ``crop_box`` lies.
    """

    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    header: object  # nibabel header of the first modality as stored: the written segmentation copies it
    reorientation: geometry_lib.Reorientation | None  # None: the scan was already in the model's orientation
    oriented_shape: tuple[int, int, int]
    grid_shape: tuple[int, int, int]
    crop_box: volume_ops.Box

    @property
    def affine(self) -> np.ndarray:
        """The source affine: where an inverted array's voxels lie in the world."""
        return np.asarray(self.source_affine, dtype=np.float64)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """The source voxel size in mm, in the stored array's axis order."""
        return volume_ops.voxel_spacing(self.source_affine)

    @property
    def resampled(self) -> bool:
        return tuple(self.grid_shape) != tuple(self.oriented_shape)

    @property
    def padding(self) -> tuple[tuple[int, int], ...]:
        """Voxels of zero padding the crop added before and after each axis (the box beyond the grid)."""
        return tuple((max(0, -a), max(0, b - n)) for (a, b), n in zip(self.crop_box, self.grid_shape))

    def invert(self, array: np.ndarray, kind: str = LABELS) -> np.ndarray:
        """``array`` on the cropped grid (3-D, or with a trailing class/region axis) on the source grid.

        ``kind``: ``labels`` (nearest resampling, background outside the
        crop; the dtype kept), ``softmax`` (background certain outside the
        crop, trilinear resampling then renormalised to sum to 1) or
        ``sigmoid`` (a region model: every region absent outside the crop,
        trilinear).  Probabilities come back float32.  Exact where nothing
        was resampled: the padding is dropped, flips and swaps are undone.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose one of {list(KINDS)}")
        expected = tuple(b - a for a, b in self.crop_box)
        if tuple(array.shape[:3]) != expected:
            raise ValueError(f"an array of shape {array.shape} is not on the {expected} crop")
        out = self._uncropped_labels(array) if kind == LABELS else self._uncropped_probabilities(array, kind)
        return out if self.reorientation is None else self.reorientation.backward(out)

    def _uncropped_labels(self, array: np.ndarray) -> np.ndarray:
        out = volume_ops.uncrop(array, self.crop_box, self.grid_shape)
        return volume_ops.resample(out, self.oriented_shape, order=0) if self.resampled else out

    def _uncropped_probabilities(self, array: np.ndarray, kind: str) -> np.ndarray:
        probs = np.asarray(array, np.float32)
        out = volume_ops.uncrop(probs, self.crop_box, self.grid_shape)
        if kind == SOFTMAX:
            inside = volume_ops.uncrop(np.ones(probs.shape[:3], bool), self.crop_box, self.grid_shape, fill=False)
            out[~inside, 0] = 1.0
        if self.resampled:
            out = np.stack([volume_ops.resample(out[..., k], self.oriented_shape, order=1)
                            for k in range(out.shape[-1])], axis=-1)
            if kind == SOFTMAX:
                out /= np.maximum(out.sum(axis=-1, keepdims=True), 1e-6)
        return out
