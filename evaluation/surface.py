"""Surface distances weighted by surface-element area, as DeepMind's surface-distance computes them.

The BraTS 2023-2025 lesion-wise code (rachitsaluja/BraTS-2023-Metrics and
BraTS-2024-Metrics, which vendor google-deepmind/surface-distance) takes HD95
from ``compute_surface_distances`` + ``compute_robust_hausdorff(..., 95)``.
That is not the voxel-surface HD95 of MedPy, panoptica or
:func:`shared.metrics.hd95`:

* the surface points are the *corners* of the voxel grid (half a voxel off the
  voxel centres) whose 2x2x2 neighbourhood of voxels is partly inside the
  mask; each carries the area of the marching-cubes triangles that pass
  through its cell (:func:`surfel_areas`, spacing-aware);
* each directed distance is the Euclidean distance in mm from a surface point
  of one mask to the nearest surface point of the other (on the same corner
  grid, ``distance_transform_edt`` with the spacing);
* the 95th percentile of each direction is area-weighted and not
  interpolated: distances are sorted, the cumulative share of surface area is
  searched for 0.95 (``np.searchsorted``, left side) and the distance at that
  position is taken; HD95 is the larger of the two directions.

:data:`SURFACES` names the two choices; a scheme (:mod:`evaluation.schemes`) says
which one its lesion HD95 uses and :func:`hd95` dispatches on it.

The area table.  DeepMind's ``lookup_tables.neighbour_code_to_normals`` lists,
for each of the 256 neighbourhood codes, the triangles its marching-cubes
table places in the cell, each as an area vector (normal of length = area, in
a unit cell); with spacing ``(s0, s1, s2)`` a triangle's area is
``|(n0*s1*s2, n1*s0*s2, n2*s0*s1)|`` and a code's area is the sum over its
triangles.  The sum of lengths (not the length of the sum) depends on the
exact triangulation, quirks included (a few codes list triangles of opposite
orientation), so it cannot be rebuilt from geometry alone.
:data:`_TRIANGLES_IN_EIGHTHS` is that table re-encoded by :func:`encode_triangles`:
per code (space separated, code 0 first), three digits per triangle, each
``8 * |component|`` (every component is a multiple of 1/8 up to 1/2; the signs
do not enter the area).  tests/test_surface.py checks it against geometry
(flat faces, edges and corners of a box of any spacing, complements).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from shared import metrics

SURFACES = {
    "voxel": "surface voxels (6-connected), each weighing the same (MedPy, panoptica, nnU-Net, shared.metrics)",
    "surfel": "DeepMind surface-distance: voxel-corner surface elements weighted by their marching-cubes area, "
              "area-weighted 95th percentile without interpolation (BraTS 2023-2025 lesion-wise code)",
}

_TRIANGLES_IN_EIGHTHS = """
000 111 111 220220 111 202202 111111 400222111 111 111111 202202 400222111 220220 400222111
400222111 400400 111 022022 111111 040222111 111111 004222111 111111111 111222222111 111111
022022111 202202111 111333022202 111220220 333022111220 400111222111 400111222 111 111111 022022
040111222 111111 111202202 022022111 333022111202 111111 111111111 004222111 222222111111
111220220 400222111111 022333111220 400222111 220220 040222111 040111222 040040 220220111
333202111220 111040222111 040222111 111220220 040222111111 333220111202 040222111 220220220220
220220111 111220220 220220 111 111111 111111 111220220 022022 004222111 022022111 333022111220
111111 111111111 111202202 400222111111 040222111 222222111111 202333022111 400222111 202202
004222111 111202202 202333220111 004222111 004004 111111222004 111222004 202202111 004222111111
202202202202 111202202 202333220111 004222111 111202202 202202 111111 111111111 111022022
040111222111 022022111 004222111111 022022022022 022022111 111111111 111111111111 004222111111
111111111 040222111111 111111111 022022111 111111 400222111 222111222111 333022111202 040222111
333220022111 111222004 111022022 022022 400222111111 111111111 202202111 111111 220220111 111111
111111 111 111 111111 111111 220220111 111111 202202111 111111111 400222111111 022022 111022022
111222004 333220022111 040222111 333022111202 222111222111 400222111 111111 022022111 111111111
040222111111 111111111 004222111111 111111111111 111111111 022022111 022022022022 004222111111
022022111 040111222111 111022022 111111111 111111 202202 111202202 004222111 202333220111
111202202 202202202202 004222111111 202202111 111222004 111111222004 004004 004222111
202333220111 111202202 004222111 202202 400222111 202333022111 222222111111 040222111
400222111111 111202202 111111111 111111 333022111220 022022111 004222111 022022 111220220 111111
111111 111 220220 111220220 220220111 220220220220 040222111 333220111202 040222111111 111220220
040222111 111040222111 333202111220 220220111 040040 040111222 040222111 220220 400222111
022333111220 400222111111 111220220 222222111111 004222111 111111111 111111 333022111202
022022111 111202202 111111 040111222 022022 111111 111 400111222 400111222111 333022111220
111220220 111333022202 202202111 022022111 111111 111222222111 111111111 004222111 111111
040222111 111111 022022 111 400400 400222111 400222111 220220 400222111 202202 111111 111
400222111 111111 202202 111 220220 111 111 000
"""


def encode_triangles(normals) -> str:
    """DeepMind's ``neighbour_code_to_normals`` (256 lists of [n0, n1, n2]) as :data:`_TRIANGLES_IN_EIGHTHS`."""
    return " ".join("".join("".join(str(int(round(abs(c) * 8))) for c in triangle) for triangle in code)
                    for code in normals)


@functools.lru_cache(maxsize=1)
def triangles() -> tuple[np.ndarray, ...]:
    """Per neighbourhood code, its triangles' |area vectors| in a unit cell, shape (n, 3)."""
    codes = _TRIANGLES_IN_EIGHTHS.split()
    if len(codes) != 256:
        raise AssertionError(f"surface area table has {len(codes)} codes, not 256")
    return tuple(np.array([int(d) for d in code], dtype=float).reshape(-1, 3) / 8.0 for code in codes)


@functools.lru_cache(maxsize=64)
def surfel_areas(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area in mm² of the surface element of each of the 256 codes at voxel size ``spacing``."""
    s0, s1, s2 = (float(s) for s in spacing)
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    table = np.array([float(np.sum(np.linalg.norm(t * scale, axis=1))) for t in triangles()])
    table.setflags(write=False)
    return table


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """The 8-bit code of every voxel corner: bit ``7 - (4a + 2b + c)`` is set when voxel
    ``(i - 1 + a, j - 1 + b, k - 1 + c)`` is inside (DeepMind's 2x2x2 kernel 128 ... 1).
    Shape: the mask's plus one along each axis (every corner of every voxel)."""
    padded = np.pad(np.asarray(mask, dtype=bool), 1).view(np.uint8)
    n0, n1, n2 = (n - 1 for n in padded.shape)
    codes = np.zeros((n0, n1, n2), dtype=np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                bit = np.uint8(128 >> (4 * a + 2 * b + c))
                codes |= padded[a:a + n0, b:b + n1, c:c + n2] * bit
    return codes


def surfel_distances(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0)):
    """Directed distances and areas: ((prediction→truth distances, prediction areas),
    (truth→prediction distances, truth areas)); neither sorted.  Both masks non-empty."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    either = pred | truth
    box = tuple(slice(int(lo), int(hi) + 1) for lo, hi in
                (np.flatnonzero(either.any(axis=tuple(a for a in range(3) if a != axis)))[[0, -1]]
                 for axis in range(3)))
    sampling = tuple(float(s) for s in spacing)
    areas = surfel_areas(sampling)
    out = []
    codes = [neighbour_codes(pred[box]), neighbour_codes(truth[box])]
    borders = [(c != 0) & (c != 255) for c in codes]
    distance_maps = [ndimage.distance_transform_edt(~b, sampling=sampling) for b in borders]
    for this, other in ((0, 1), (1, 0)):
        out.append((distance_maps[other][borders[this]], areas[codes[this][borders[this]]]))
    return tuple(out)


def robust_hausdorff(distances: np.ndarray, areas: np.ndarray, percent: float = 95.0) -> float:
    """One direction's area-weighted percentile, as ``compute_robust_hausdorff``: sort by
    (distance, area), cumulative area share, first position reaching ``percent`` / 100."""
    if distances.size == 0:
        return float("inf")
    order = np.lexsort((areas, distances))
    distances, areas = distances[order], areas[order]
    share = np.cumsum(areas) / np.sum(areas)
    idx = int(np.searchsorted(share, percent / 100.0))
    return float(distances[min(idx, distances.size - 1)])


def surfel_hd95(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """DeepMind's robust Hausdorff at 95 % of two non-empty masks: the larger directed percentile."""
    (to_truth, pred_areas), (to_pred, truth_areas) = surfel_distances(pred, truth, spacing)
    return max(robust_hausdorff(to_pred, truth_areas), robust_hausdorff(to_truth, pred_areas))


def hd95(pred: np.ndarray, truth: np.ndarray, spacing, surface: str, reduction: str) -> float:
    """HD95 of two non-empty masks by the scheme's choice of ``surface`` (:data:`SURFACES`) and
    ``reduction`` (:data:`shared.metrics.HD95_REDUCTIONS`; ``surfel`` is always max_directed)."""
    if surface == "surfel":
        return surfel_hd95(pred, truth, spacing)
    if surface != "voxel":
        raise ValueError(f"unknown surface {surface!r}; known: {', '.join(SURFACES)}")
    return metrics.reduce_hd95(*metrics.surface_distances(pred, truth, spacing), reduction)
