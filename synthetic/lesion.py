"""The tumour of a synthetic patient: a glioma's nested shape, its placement, cavity and cyst.

Split from ``synthetic.cohort`` so the lesion model reads on its own: the
box lesions must stay in (:func:`lesion_box`), the nested tissues of an HGG
or LGG glioma drawn as irregular balls, rejection-sampled placement inside
the brain (:func:`place_lesion`), and the post-treatment cavity and
paediatric cyst some challenges label.  Draws come from the ``rng`` it is
given, in the order ``synthetic.cohort.synthesize`` calls them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from synthetic.anatomy import (BG, CAVITY, CSF, CYST, ENHANCING, NECROSIS, NON_ENHANCING, OEDEMA, Anatomy,
                               random_field)

_OEDEMA_IRREGULARITY = 0.3  # oedema spreads unevenly (finger-like) around the core


def lesion_box(shape: Sequence[int]) -> tuple[slice, slice, slice]:
    """Box every lesion voxel lies in: x, y 48:192 and z 5:149 at 240x240x155, scaled otherwise.

    Keeps tumours away from the volume edges, where crops and augmentations
    of the training pipeline would cut them.
    """
    x, y, z = shape
    return (
        slice(int(0.2 * x), x - int(0.2 * x)),
        slice(int(0.2 * y), y - int(0.2 * y)),
        slice(round(z * 5 / 155), z - round(z * 6 / 155)),
    )


def _blob(rng, window: int, centre, radius: float, amplitude: float) -> np.ndarray:
    """Irregular ball: distance / (radius * (1 + amplitude * smooth noise)) < 1 on a cube window."""
    axis = np.arange(window) - (window - 1) / 2
    d2 = ((axis - centre[0]) ** 2)[:, None, None] + ((axis - centre[1]) ** 2)[None, :, None] + (
        (axis - centre[2]) ** 2
    )[None, None, :]
    unit = (np.arange(window) + 0.5) / window
    noise = random_field(rng, (5, 5, 5), (unit, unit, unit))
    scale = radius * (1 + amplitude * np.clip(noise, -2.0, 2.0))
    return d2 < scale**2


def _random_offset(rng, max_length: float) -> np.ndarray:
    """A random vector no longer than ``max_length`` (core off-centre within the oedema)."""
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    return direction * max_length * rng.uniform(0, 1)


def _make_lesion(rng, grade: str, reference_radius: float, shrink: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """Tissue codes of one glioma on a cube window centred on it, and the labels it must keep.

    HGG: oedema around an enhancing rim around a necrotic core.  LGG: smaller,
    oedema around a non-enhancing core, with a small enhancing focus in ~30 %
    of cases.  Radii scale with the brain but keep a floor in voxels, so tiny
    volumes still get every label.
    """
    if grade == "HGG":
        whole = reference_radius * rng.uniform(0.28, 0.40) * shrink
        core = whole * rng.uniform(0.5, 0.7)
        inner = max(1.5, core * rng.uniform(0.55, 0.75))
        core = max(core, inner + 1.5)
    else:
        whole = reference_radius * rng.uniform(0.2, 0.3) * shrink
        core = max(1.8, whole * rng.uniform(0.45, 0.7))
        inner = 0.0
    whole = max(whole, core + 2.0)
    enhancing_focus = grade == "LGG" and rng.uniform() < 0.3

    half = int(math.ceil(whole * (1 + 2 * _OEDEMA_IRREGULARITY))) + 1
    window = 2 * half + 1
    zero = np.zeros(3)
    core_centre = _random_offset(rng, 0.3 * (whole - core))
    lesion = np.zeros((window,) * 3, dtype=np.uint8)
    lesion[_blob(rng, window, zero, whole, _OEDEMA_IRREGULARITY)] = OEDEMA
    core_mask = _blob(rng, window, core_centre, core, 0.1)
    if grade == "HGG":
        necrotic = _blob(rng, window, core_centre + _random_offset(rng, 0.2 * (core - inner)), inner, 0.12)
        lesion[core_mask] = ENHANCING
        lesion[core_mask & necrotic] = NECROSIS
        required: tuple[int, ...] = (OEDEMA, ENHANCING, NECROSIS)
    else:
        lesion[core_mask] = NON_ENHANCING
        required = (OEDEMA, NON_ENHANCING)
        if enhancing_focus:
            focus_radius = max(1.2, core * rng.uniform(0.25, 0.4))
            focus_centre = core_centre + _random_offset(rng, 0.3 * core)
            lesion[core_mask & _blob(rng, window, focus_centre, focus_radius, 0.1)] = ENHANCING
            required = required + (ENHANCING,)
    return lesion, required


def place_lesion(rng, shape, anatomy: Anatomy, grade: str) -> tuple[tuple[slice, ...], np.ndarray]:
    """Put a lesion inside the brain and the lesion box; returns its crop window and tissue codes.

    Rejection sampling of the centre: every lesion voxel must lie in the
    brain away from its surface (normalised depth < 0.95) and inside
    ``lesion_box``.  Oedema does not invade CSF (BraTS leaves ventricles and
    sulci unlabelled), and every required label must survive that.
    Repeated failures shrink the lesion.
    """
    reference = float(np.prod(anatomy.semi_axes) ** (1 / 3))
    box_lo = np.array([s.start for s in lesion_box(shape)])
    box_hi = np.array([s.stop for s in lesion_box(shape)])
    crop_lo = np.array([s.start for s in anatomy.box])
    crop_hi = np.array([s.stop for s in anatomy.box])
    for attempt in range(400):
        if attempt % 40 == 0:
            lesion, required = _make_lesion(rng, grade, reference, shrink=0.9 ** (attempt // 40))
            occupied = np.argwhere(lesion > 0)
            half = lesion.shape[0] // 2
            extent_lo = occupied.min(axis=0) - half
            extent_hi = occupied.max(axis=0) - half
        direction = rng.standard_normal(3)
        offset = direction / np.linalg.norm(direction) * rng.uniform(0, 1) ** (1 / 3) * 0.6
        if attempt < 200:  # gliomas grow in one hemisphere; small brains may need the midline
            offset[0] = math.copysign(0.15 + 0.85 * abs(offset[0]), offset[0])
        centre = np.round(anatomy.centre + offset * anatomy.semi_axes).astype(int)
        if np.any(centre + extent_lo < box_lo) or np.any(centre + extent_hi >= box_hi):
            continue
        lo, hi = centre - half - crop_lo, centre + half + 1 - crop_lo
        if np.any(lo < 0) or np.any(hi > crop_hi - crop_lo):
            continue
        window = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        if np.any((lesion > 0) & (anatomy.depth[window] >= 0.95)):
            continue
        placed = lesion.copy()
        placed[(placed == OEDEMA) & (anatomy.tissues[window] == CSF)] = BG
        if all(np.any(placed == code) for code in required):
            return window, placed
    raise RuntimeError(f"could not place a {grade} lesion in a brain of shape {shape}")


def add_cavity(rng, lesion: np.ndarray) -> None:
    """Turn a ball of oedema at the lesion's edge into a resection cavity (post-treatment labels).

    The ball is centred on a random oedema voxel and never takes all the
    oedema, so every label of a post-treatment challenge stays present.
    """
    oedema = np.argwhere(lesion == OEDEMA)
    if len(oedema) < 2:
        return
    centre = oedema[rng.integers(len(oedema))]
    radius = max(1.5, 0.3 * np.count_nonzero(lesion) ** (1 / 3))
    grid = np.indices(lesion.shape).reshape(3, -1).T
    ball = (np.linalg.norm(grid - centre, axis=1) < radius).reshape(lesion.shape) & (lesion == OEDEMA)
    if ball.sum() >= len(oedema):
        ball &= np.indices(lesion.shape)[0] < centre[0]
    lesion[ball] = CAVITY


def add_cyst(lesion: np.ndarray) -> None:
    """Turn one half of the tumour core (along the first axis) into a cyst (PED 2024's CC label)."""
    core = np.isin(lesion, (NECROSIS, NON_ENHANCING))
    where = np.argwhere(core)
    if len(where) < 2:
        return
    cut = np.median(where[:, 0])
    half = core & (np.indices(lesion.shape)[0] > cut)
    if half.any() and half.sum() < core.sum():
        lesion[half] = CYST
