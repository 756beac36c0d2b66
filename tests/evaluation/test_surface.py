"""Area-weighted surface distances (DeepMind surface-distance, the BraTS 2023-2025 lesion HD95).

Expected numbers are derived in each docstring; ``brats_reference`` is a literal
transcription of the vendored surface-distance code, used as a cross-check.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.evaluation import brats_reference
from evaluation import surface
from shared import metrics


def _scale(spacing):
    s0, s1, s2 = spacing
    return np.array([s1 * s2, s0 * s2, s0 * s1])  # area of a unit face perpendicular to axis 0, 1, 2


def test_single_corners_and_half_planes_have_their_geometric_areas():
    """A corner cell with one voxel in (or one out) holds one triangle cutting the corner at
    the edge midpoints: legs of 1/2, area sqrt(3)/8.  A cell split in half by a plane
    (four voxels on one side) holds a unit square: area 1 at 1 mm."""
    areas = surface.surfel_areas((1.0, 1.0, 1.0))
    for bit in range(8):
        assert areas[1 << bit] == pytest.approx(math.sqrt(3) / 8)
        assert areas[255 - (1 << bit)] == pytest.approx(math.sqrt(3) / 8)
    for half in (0b00001111, 0b11110000, 0b00110011, 0b11001100, 0b01010101, 0b10101010):
        assert areas[half] == pytest.approx(1.0)
    assert areas[0] == 0.0 and areas[255] == 0.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 2.0, 3.0), (0.5, 1.0, 4.0)])
def test_the_surface_area_of_a_box_matches_its_chamfered_geometry(spacing):
    """A cube of k = 4 voxels, voxel size (s0, s1, s2); S_d = area of a unit face perpendicular to axis d.

    Marching cubes through voxel centres gives a box of (k-1) cells a side with
    chamfered edges and cut corners.  Each of the 2 faces perpendicular to axis d
    has (k-1)^2 half-plane corners of area S_d; each of the 4 edges along axis d
    has k-1 corners holding two triangles with area vectors (1/4, 1/4) in the
    other two axes e, f: 2 x |(S_e, S_f)| / 4; each of the 8 corners one
    triangle |(S_0, S_1, S_2)| / 8.  Total:
    sum_d [2 (k-1)^2 S_d + 4 (k-1) |(S_e, S_f)| / 2] + |S|
    (6 x 9 + 12 x 3 x sqrt(2)/2 + sqrt(3) = 80.19 mm^2 at 1 mm).
    """
    k = 4
    cube = np.zeros((8, 8, 8), bool)
    cube[2:2 + k, 2:2 + k, 2:2 + k] = True
    (_, areas), _ = surface.surfel_distances(cube, cube, spacing)
    s = _scale(spacing)
    expected = sum(2 * (k - 1) ** 2 * s[d] + 4 * (k - 1) * np.hypot(*np.delete(s, d)) / 2 for d in range(3))
    expected += np.linalg.norm(s)
    assert areas.sum() == pytest.approx(expected)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_area_weighted_hd95_differs_from_the_voxel_hd95_by_the_derived_amount(spacing):
    """Truth: one voxel.  Prediction: that voxel and its neighbour along axis 0 (s0 mm away).

    Voxel surfaces: the truth's one voxel is at distance 0; the prediction's two
    voxels are at 0 and s0; np.percentile([0, s0], 95) interpolates to 0.95 s0.

    Surface elements (voxel corners): the truth's 8 corners are all corners of the
    prediction (distance 0).  The prediction's 12 corners: 4 at the far end are
    s0 from the truth's nearest corner, each one cut corner of area sqrt(3)/8; the
    other 8 are at 0 (4 cut corners, 4 edge corners of area sqrt(2)/2 each at
    1 mm).  The far corners hold 0.866 / 4.561 = 19 % > 5 % of the area, so the
    area-weighted 95th percentile is the far distance itself: HD95 = s0, not 0.95 s0.
    """
    truth = np.zeros((5, 5, 5), bool)
    truth[2, 2, 2] = True
    pred = truth.copy()
    pred[3, 2, 2] = True
    s0 = spacing[0]
    assert metrics.hd95(pred, truth, spacing) == pytest.approx(0.95 * s0)
    assert surface.surfel_hd95(pred, truth, spacing) == pytest.approx(s0)
    assert surface.hd95(pred, truth, spacing, "surfel", "max_directed") == pytest.approx(s0)
    assert surface.hd95(pred, truth, spacing, "voxel", "max_directed") == pytest.approx(0.95 * s0)
    (to_truth, pred_areas), (to_pred, _) = surface.surfel_distances(pred, truth, spacing)
    assert len(to_truth) == 12 and not to_pred.any()
    if spacing == (1.0, 1.0, 1.0):
        assert pred_areas[to_truth > 0].sum() / pred_areas.sum() == pytest.approx(
            (math.sqrt(3) / 2) / (math.sqrt(3) + 2 * math.sqrt(2)))


def test_surfel_hd95_equals_the_literal_surface_distance_code_on_random_masks():
    """Random blobs, random anisotropic spacing: our corner codes (shifted slices), lexsort and
    percentile give exactly what the vendored compute_surface_distances +
    compute_robust_hausdorff(…, 95) give, written out literally in brats_reference."""
    rng = np.random.default_rng(7)
    for _ in range(25):
        a, b = np.zeros((14, 14, 14), bool), np.zeros((14, 14, 14), bool)
        shape = tuple(rng.integers(2, 9, size=3))
        a[2:2 + shape[0], 3:3 + shape[1], 1:1 + shape[2]] = rng.random(shape) > 0.3
        b[1:1 + shape[0], 4:4 + shape[1], 2:2 + shape[2]] = rng.random(shape) > 0.4
        if not a.any() or not b.any():
            continue
        spacing = tuple(float(s) for s in rng.choice([0.5, 1.0, 1.2, 3.0], size=3))
        assert surface.surfel_hd95(a, b, spacing) == brats_reference.hd95(b, a, spacing)


def test_unknown_surface_is_refused():
    mask = np.ones((2, 2, 2), bool)
    with pytest.raises(ValueError, match="unknown surface"):
        surface.hd95(mask, mask, (1, 1, 1), "mesh", "max_directed")
