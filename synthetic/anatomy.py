"""The healthy brain of a synthetic patient: tissue codes, smooth random fields, anatomy.

Split from ``synthetic.cohort`` (which assembles and writes patients) so the
geometry reads on its own: the tissue codes every other part of a patient
refers to, the smooth random fields that shape the brain surface, folds,
lesions, texture and bias, and the tissue map of a skull-stripped brain
(:func:`make_anatomy`).  Every function draws from the ``rng`` it is given,
in a fixed order, so a patient stays a pure function of its seed.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

# Tissue codes of ``synthetic.cohort.SyntheticPatient.tissues``; the index into TISSUES.
TISSUES = ("background", "csf", "grey_matter", "white_matter", "oedema", "enhancing", "necrosis", "non_enhancing",
           "cavity", "cyst")
BG, CSF, GM, WM, OEDEMA, ENHANCING, NECROSIS, NON_ENHANCING, CAVITY, CYST = range(len(TISSUES))


# --------------------------------------------------------------------------
# Smooth random fields
# --------------------------------------------------------------------------


def _gaussian_basis(coords: np.ndarray, num_nodes: int) -> np.ndarray:
    """Gaussian bumps on ``num_nodes`` evenly spaced nodes over [0, 1], evaluated at ``coords``.

    Rows are scaled to unit L2 norm, so a field with N(0, 1) weights has unit
    variance everywhere (no dimmer patches between nodes).  Separable bases
    let a 3-D field be three small matrix products instead of a 3-D filter.
    """
    nodes = np.linspace(0.0, 1.0, num_nodes)
    width = 0.75 * (nodes[1] - nodes[0])
    basis = np.exp(-0.5 * ((coords[:, None] - nodes[None, :]) / width) ** 2)
    basis /= np.linalg.norm(basis, axis=1, keepdims=True)
    return basis.astype(np.float32)


def separable_field(weights: np.ndarray, bases: Sequence[np.ndarray]) -> np.ndarray:
    """sum_abc weights[a, b, c] * bx[i, a] * by[j, b] * bz[k, c], as three matrix products.

    The last product (X x a) @ (a x Y*Z) dominates and runs in BLAS, so even
    240x240x155 fields cost ~10 ms.
    """
    bx, by, bz = bases
    t = weights.astype(np.float32) @ bz.T  # (a, b, Z)
    t = np.einsum("jb,abk->ajk", by, t)  # (a, Y, Z)
    return (bx @ t.reshape(t.shape[0], -1)).reshape(bx.shape[0], by.shape[0], bz.shape[0])


def node_counts(shape: Sequence[int], per_axis: Sequence[int]) -> tuple[int, ...]:
    """Node counts, capped at one node per ~3 voxels so tiny volumes stay smooth."""
    return tuple(max(3, min(int(m), n // 3)) for m, n in zip(per_axis, shape))


def random_field(rng: np.random.Generator, nodes: Sequence[int], coords: Sequence[np.ndarray]) -> np.ndarray:
    """A smooth zero-mean unit-variance random field on the grid ``coords`` (each in [0, 1])."""
    weights = rng.standard_normal(tuple(nodes))
    bases = [_gaussian_basis(c, m) for c, m in zip(coords, nodes)]
    return separable_field(weights, bases)


def unit_coords(shape: Sequence[int], box: Sequence[slice]) -> list[np.ndarray]:
    """Voxel centres of ``box`` in [0, 1] volume coordinates, so crops see the full-volume field."""
    return [(np.arange(s.start, s.stop) + 0.5) / n for s, n in zip(box, shape)]


# --------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Anatomy:
    """Brain geometry on the crop ``box`` that holds the whole brain."""

    box: tuple[slice, slice, slice]
    tissues: np.ndarray  # uint8 tissue codes on the crop
    depth: np.ndarray  # float32 normalised radius: 0 at centre, 1 at the brain surface
    centre: np.ndarray  # brain centre, voxels (full volume)
    semi_axes: np.ndarray  # voxels


def _brain_box(shape, centre, semi_axes, bulge) -> tuple[slice, slice, slice]:
    """Crop holding the brain with a 2-voxel margin: the heavy work skips the empty corners."""
    half = semi_axes * bulge + 2
    lo = np.maximum(np.floor(centre - half), 0).astype(int)
    hi = np.minimum(np.ceil(centre + half) + 1, shape).astype(int)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def make_anatomy(rng: np.random.Generator, shape: tuple[int, int, int]) -> Anatomy:
    """Tissue map of a skull-stripped brain.

    An ellipsoid (longest front-to-back, narrower at the bottom) with a
    smoothly irregular surface.  The cortex is a grey-matter ribbon of
    roughly constant thickness that lines every pial surface: the outer
    surface, sulci (thin CSF sheets cut from the surface down to a varying
    depth) and the interhemispheric fissure.  White matter fills the rest;
    deep grey nuclei and two curved lateral ventricles sit near the centre.
    """
    dims = np.array(shape, dtype=float)
    semi = np.array([0.31, 0.37, 0.40]) * dims * rng.uniform(0.95, 1.03, 3)
    centre = (dims - 1) / 2 + rng.uniform(-0.015, 0.015, 3) * dims
    taper = rng.uniform(0.04, 0.10)  # lateral width grows towards the top
    surface_amp = 0.05
    bulge = 1 + surface_amp * 2.5  # largest outward surface displacement
    box = _brain_box(shape, centre, semi * np.array([1 + taper, 1, 1]), bulge)
    coords = unit_coords(shape, box)

    vx, vy, vz = ((np.arange(s.start, s.stop) - c).astype(np.float32) for s, c in zip(box, centre))
    ix, iy, iz = vx / semi[0], vy / semi[1], vz / semi[2]
    width = 1 + taper * iz
    ux2 = (ix**2)[:, None, None] / (width**2)[None, None, :]
    d2 = (ux2 + (iy**2)[None, :, None] + (iz**2)[None, None, :]).astype(np.float32)
    surface = np.clip(random_field(rng, node_counts(shape, (6, 7, 5)), coords), -2.5, 2.5)
    depth = np.sqrt(d2) / (1 + surface_amp * surface)
    brain = depth < 1

    # Distances in voxels (= mm) to the nearest pial surface.
    scale = float(np.prod(semi) ** (1 / 3)) / 74.0  # 1 at the BraTS size
    radius = np.sqrt((vx**2)[:, None, None] + (vy**2)[None, :, None] + (vz**2)[None, None, :])
    radius /= np.maximum(depth, 1e-3)  # centre-to-surface distance along the ray
    outer = (1 - depth) * radius
    folds = random_field(rng, node_counts(shape, (n // 4.5 for n in shape)), coords)
    slope = np.sqrt(sum(g**2 for g in np.gradient(folds)))
    sulcus_depth = 0.18 * float(np.prod(semi) ** (1 / 3)) * (1 + 0.3 * surface)
    sulcus = np.hypot(np.abs(folds) / (slope + 1e-6), np.maximum(outer - sulcus_depth, 0))
    fissure = np.sqrt(
        (vx**2)[:, None, None]
        + (np.maximum(0.5 - depth, 0) * radius) ** 2
        + (np.maximum(-0.15 - iz, 0) * semi[2])[None, None, :] ** 2
    )
    pial = np.minimum(np.minimum(outer, sulcus), fissure)
    csf_width = max(0.5, 0.7 * scale)
    cortex = max(1.0, 2.8 * scale)

    tissues = np.where(brain, np.uint8(WM), np.uint8(BG))
    tissues[brain & (pial < csf_width + cortex)] = GM
    tissues[brain & (pial < csf_width)] = CSF
    _add_deep_structures(rng, tissues, ix, iy, iz, width, brain)
    return Anatomy(box=box, tissues=tissues, depth=depth, centre=centre, semi_axes=semi)


def _add_deep_structures(rng, tissues, ix, iy, iz, width, brain) -> None:
    """Deep grey nuclei and lateral ventricles, computed on a central sub-crop only."""
    sx = np.flatnonzero(np.abs(ix) < 0.5)
    sy = np.flatnonzero(np.abs(iy) < 0.55)
    sz = np.flatnonzero(np.abs(iz) < 0.45)
    sub = (slice(sx[0], sx[-1] + 1), slice(sy[0], sy[-1] + 1), slice(sz[0], sz[-1] + 1))
    ux = ix[sub[0], None, None] / width[None, None, sub[2]]
    uy = iy[None, sub[1], None]
    uz = iz[None, None, sub[2]]
    region = tissues[sub]
    inside = brain[sub]

    def ellipsoid(cx, cy, cz, ax, ay, az, bend=0.0):
        return ((ux - cx) / ax) ** 2 + ((uy - cy) / ay) ** 2 + ((uz - cz - bend * (uy - cy) ** 2) / az) ** 2 < 1

    nuclei = rng.uniform(0.9, 1.1)
    ventricle = rng.uniform(0.8, 1.3)  # ventricle size varies with age
    for side in (-1, 1):
        deep = ellipsoid(side * 0.2, 0.05, -0.05, 0.12 * nuclei, 0.2 * nuclei, 0.13 * nuclei)
        region[deep & inside] = GM
    for side in (-1, 1):
        vent = ellipsoid(side * 0.11, -0.05, 0.10, 0.075 * ventricle, 0.38 * ventricle, 0.12 * ventricle, bend=-0.6)
        region[vent & inside] = CSF
