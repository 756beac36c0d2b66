"""A synthetic BraTS cohort of any challenge: skull-stripped heads with a tumour each.

The cohort is the demo and test input of the data engine and the benchmark
data of N4 bias-field correction, so it imitates what matters to them:

* the folder layout, file names and label numbering of any challenge in
  :mod:`shared.challenges` (default BraTS 2020, with ``name_mapping.csv``
  grades), int16 voxels, the BraTS affine at 1 mm or any voxel spacing;
* a skull-stripped brain (background exactly 0, every brain voxel > 0) with
  CSF, grey and white matter in plausible relative contrasts per modality,
  mild texture, partial-volume smoothing and noise;
* a lesion nested the way gliomas are (necrosis / non-enhancing core,
  enhancing rim, oedema), plus a resection cavity where the challenge labels
  one (GLI 2024, MET 2025) and a cyst where it labels one (PED 2024), written
  in the challenge's own numbering so every label appears;
* a known smooth multiplicative bias field per modality, saved next to the
  cohort (``bias_fields/``), so N4's estimate can be scored against it.

Everything is a pure function of ``(seed, patient index, shape, grade)``
(``np.random.default_rng([seed, index])``), and files are written with
fixed gzip headers, so the same arguments give the same bytes: the data
engine's version ids, which hash the input files, are then reproducible.

All writes go through ``shared.storage``, so ``output_dir`` may be a
``gs://`` path.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import io
import math
import os
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from shared.nifti_io import nifti_bytes as shared_nifti_bytes
from shared import challenges, layouts, storage
from shared.storage import write_bytes

MODALITIES = ("flair", "t1", "t1ce", "t2")
DEFAULT_CHALLENGE = "brats2020"
GRADES = ("HGG", "LGG")
DEFAULT_SHAPE = (240, 240, 155)
MIN_DIM = 32
BIAS_DIR = "bias_fields"
NAME_MAPPING = "name_mapping.csv"
NAME_MAPPING_COLUMNS = (
    "Grade",
    "BraTS_2017_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2019_subject_ID",
    "BraTS_2020_subject_ID",
)

# Tissue codes of ``SyntheticPatient.tissues``; the index into TISSUES.
TISSUES = ("background", "csf", "grey_matter", "white_matter", "oedema", "enhancing", "necrosis", "non_enhancing",
           "cavity", "cyst")
BG, CSF, GM, WM, OEDEMA, ENHANCING, NECROSIS, NON_ENHANCING, CAVITY, CYST = range(len(TISSUES))

# Which tissues each label key of the registry stands for.  Necrosis and
# non-enhancing tumour share the core label; a cyst is core unless the
# challenge labels cysts; the GTV of radiotherapy is the tumour without oedema.
_TISSUES_OF_LABEL = {
    "NCR": (NECROSIS, NON_ENHANCING, CYST), "NETC": (NECROSIS, NON_ENHANCING, CYST),
    "ED": (OEDEMA,), "SNFH": (OEDEMA,), "ET": (ENHANCING,), "RC": (CAVITY,), "CC": (CYST,),
    "GTV": (NECROSIS, NON_ENHANCING, ENHANCING, CYST),
}


def seg_lut(challenge: challenges.Challenge) -> np.ndarray:
    """Stored label of each tissue code in ``challenge``'s numbering (later labels win a shared tissue)."""
    lut = np.zeros(len(TISSUES), dtype=np.uint8)
    for label in challenge.labels:
        lut[list(_TISSUES_OF_LABEL[label.key])] = label.value
    return lut

# Mean intensity of each tissue (order of TISSUES) before the per-patient
# gain.  Relative contrasts follow clinical appearance:
#   T1: WM > GM > CSF, tumour hypointense;  T1ce: T1 plus a very bright
#   enhancing rim;  T2: CSF > oedema > GM > WM;  FLAIR: oedema bright,
#   GM > WM, CSF suppressed (dark).
_BASE_INTENSITY = {
    "flair": (0.0, 150.0, 560.0, 430.0, 1100.0, 900.0, 650.0, 950.0),
    "t1": (0.0, 280.0, 560.0, 820.0, 480.0, 600.0, 300.0, 470.0),
    "t1ce": (0.0, 300.0, 600.0, 860.0, 520.0, 1800.0, 330.0, 500.0),
    "t2": (0.0, 2300.0, 1150.0, 800.0, 1700.0, 1350.0, 2000.0, 1600.0),
}
# Cavity (fluid, like CSF) and cyst (proteinaceous fluid: brighter on FLAIR and T1).
_EXTRA_INTENSITY = {"flair": (180.0, 800.0), "t1": (260.0, 380.0), "t1ce": (280.0, 420.0), "t2": (2250.0, 2100.0)}
_TISSUE_JITTER = 0.05  # +-5 % per tissue and patient: keeps the orderings above
_GAIN_RANGE = (0.75, 1.3)  # scanner gain per modality: why intensity normalisation is needed
_NOISE_FRACTION = 0.025  # noise sd as a fraction of the modality's WM intensity
_TEXTURE_AMPLITUDE = 0.03  # smooth tissue heterogeneity (fraction of intensity)
_TUMOUR_TEXTURE_AMPLITUDE = 0.08  # tumours are more heterogeneous than normal tissue
_PARTIAL_VOLUME_SIGMA = 0.6  # voxels; blurs tissue edges like a 1 mm resampling does
_OEDEMA_IRREGULARITY = 0.3  # oedema spreads unevenly (finger-like) around the core
_MIN_CLEAN = 2.0  # clean brain intensity floor, so that round(clean * bias) >= 1

# Bias field: log-field spans about ln(1.4 / 0.7) over the brain.
_BIAS_LOG_SPAN = math.log(2.0)
_BIAS_SKEW_LIMIT = 1.25  # max(log b) / -min(log b) accepted over the brain
_BIAS_QUANTUM = 2.0**-10  # ~0.1 %: finer than int16 rounding, and the zero low mantissa bits halve the files

_GZIP_LEVEL = 1  # fast; level 9 costs ~5x the time for ~10 % smaller files


@dataclasses.dataclass
class SyntheticPatient:
    """One generated patient: what is written to disk, plus ground truth."""

    patient_id: str
    grade: str
    images: dict[str, np.ndarray]  # modality -> int16 volume (bias applied)
    seg: np.ndarray  # uint8, the challenge's labels (BraTS 2020: {0, 1, 2, 4})
    bias_fields: dict[str, np.ndarray]  # modality -> float32 multiplicative field
    brain_mask: np.ndarray  # bool
    affine: np.ndarray
    tissues: np.ndarray | None = None  # uint8 tissue codes (TISSUES), e.g. a WM mask for N4 metrics
    challenge: str = DEFAULT_CHALLENGE  # naming and label numbering of the files


# --------------------------------------------------------------------------
# Names, shapes, grades
# --------------------------------------------------------------------------


def patient_id_for(index: int, challenge: str = DEFAULT_CHALLENGE) -> str:
    """Id of the ``index``-th patient (1-based) in the challenge's naming: 1 -> BraTS20_Training_001."""
    if index < 1:
        raise ValueError(f"patient index must be >= 1, got {index}")
    return challenges.get(challenge).patient_id(index)


def validate_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """The shape as a 3-tuple of ints; ValueError if it is not 3-D or a side is < MIN_DIM.

    Below MIN_DIM voxels the brain is too small to hold its tissues and a
    lesion of a few voxels radius inside the lesion box.
    """
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be three integers, got {shape!r}") from None
    if len(dims) != 3:
        raise ValueError(f"shape must have three dimensions, got {len(dims)}: {shape!r}")
    if any(d < MIN_DIM for d in dims):
        raise ValueError(f"every shape dimension must be >= {MIN_DIM}, got {dims}")
    return dims  # type: ignore[return-value]


def parse_shape(text: str) -> tuple[int, int, int]:
    """Parse ``"240,240,155"`` (or ``240x240x155``) into a validated shape."""
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"shape must be three comma-separated integers, got {text!r}") from None
    return validate_shape(dims)


def brats_affine(shape: Sequence[int], spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The BraTS voxel-to-world affine for ``shape`` (LPS-flipped axes) at ``spacing`` mm (default 1 mm)."""
    sx, sy, sz = (float(v) for v in spacing)
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[1, 3] = (shape[1] - 1) * sy
    return affine


def assign_grades(num_patients: int, seed: int = 0, lgg_fraction: float = 0.25) -> list[str]:
    """Grade of patients 1..num_patients, deterministic in (num_patients, seed, lgg_fraction).

    About ``lgg_fraction`` of the cohort is LGG, but with four or more
    patients there is at least one LGG (if lgg_fraction > 0) and one HGG (if
    lgg_fraction < 1), so that grade-stratified splits work on tiny cohorts.
    The LGG patients are a prefix of a seed-dependent permutation, so raising
    lgg_fraction only turns more HGG patients into LGG.
    """
    if num_patients < 1:
        raise ValueError(f"num_patients must be >= 1, got {num_patients}")
    if not 0.0 <= lgg_fraction <= 1.0:
        raise ValueError(f"lgg_fraction must be in [0, 1], got {lgg_fraction}")
    num_lgg = int(math.floor(lgg_fraction * num_patients + 0.5))
    if num_patients >= 4:
        if lgg_fraction > 0:
            num_lgg = max(num_lgg, 1)
        if lgg_fraction < 1:
            num_lgg = min(num_lgg, num_patients - 1)
    order = np.random.default_rng([seed, num_patients, 0x6ADE]).permutation(num_patients)
    lgg = set(order[:num_lgg].tolist())
    return ["LGG" if i in lgg else "HGG" for i in range(num_patients)]


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


def _separable_field(weights: np.ndarray, bases: Sequence[np.ndarray]) -> np.ndarray:
    """sum_abc weights[a, b, c] * bx[i, a] * by[j, b] * bz[k, c], as three matrix products.

    The last product (X x a) @ (a x Y*Z) dominates and runs in BLAS, so even
    240x240x155 fields cost ~10 ms.
    """
    bx, by, bz = bases
    t = weights.astype(np.float32) @ bz.T  # (a, b, Z)
    t = np.einsum("jb,abk->ajk", by, t)  # (a, Y, Z)
    return (bx @ t.reshape(t.shape[0], -1)).reshape(bx.shape[0], by.shape[0], bz.shape[0])


def _node_counts(shape: Sequence[int], per_axis: Sequence[int]) -> tuple[int, ...]:
    """Node counts, capped at one node per ~3 voxels so tiny volumes stay smooth."""
    return tuple(max(3, min(int(m), n // 3)) for m, n in zip(per_axis, shape))


def _random_field(rng: np.random.Generator, nodes: Sequence[int], coords: Sequence[np.ndarray]) -> np.ndarray:
    """A smooth zero-mean unit-variance random field on the grid ``coords`` (each in [0, 1])."""
    weights = rng.standard_normal(tuple(nodes))
    bases = [_gaussian_basis(c, m) for c, m in zip(coords, nodes)]
    return _separable_field(weights, bases)


def _unit_coords(shape: Sequence[int], box: Sequence[slice]) -> list[np.ndarray]:
    """Voxel centres of ``box`` in [0, 1] volume coordinates, so crops see the full-volume field."""
    return [(np.arange(s.start, s.stop) + 0.5) / n for s, n in zip(box, shape)]


# --------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Anatomy:
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


def _make_anatomy(rng: np.random.Generator, shape: tuple[int, int, int]) -> _Anatomy:
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
    coords = _unit_coords(shape, box)

    vx, vy, vz = ((np.arange(s.start, s.stop) - c).astype(np.float32) for s, c in zip(box, centre))
    ix, iy, iz = vx / semi[0], vy / semi[1], vz / semi[2]
    width = 1 + taper * iz
    ux2 = (ix**2)[:, None, None] / (width**2)[None, None, :]
    d2 = (ux2 + (iy**2)[None, :, None] + (iz**2)[None, None, :]).astype(np.float32)
    surface = np.clip(_random_field(rng, _node_counts(shape, (6, 7, 5)), coords), -2.5, 2.5)
    depth = np.sqrt(d2) / (1 + surface_amp * surface)
    brain = depth < 1

    # Distances in voxels (= mm) to the nearest pial surface.
    scale = float(np.prod(semi) ** (1 / 3)) / 74.0  # 1 at the BraTS size
    radius = np.sqrt((vx**2)[:, None, None] + (vy**2)[None, :, None] + (vz**2)[None, None, :])
    radius /= np.maximum(depth, 1e-3)  # centre-to-surface distance along the ray
    outer = (1 - depth) * radius
    folds = _random_field(rng, _node_counts(shape, (n // 4.5 for n in shape)), coords)
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
    return _Anatomy(box=box, tissues=tissues, depth=depth, centre=centre, semi_axes=semi)


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


# --------------------------------------------------------------------------
# Lesion
# --------------------------------------------------------------------------


def _blob(rng, window: int, centre, radius: float, amplitude: float) -> np.ndarray:
    """Irregular ball: distance / (radius * (1 + amplitude * smooth noise)) < 1 on a cube window."""
    axis = np.arange(window) - (window - 1) / 2
    d2 = ((axis - centre[0]) ** 2)[:, None, None] + ((axis - centre[1]) ** 2)[None, :, None] + (
        (axis - centre[2]) ** 2
    )[None, None, :]
    unit = (np.arange(window) + 0.5) / window
    noise = _random_field(rng, (5, 5, 5), (unit, unit, unit))
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


def _place_lesion(rng, shape, anatomy: _Anatomy, grade: str) -> tuple[tuple[slice, ...], np.ndarray]:
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


def _add_cavity(rng, lesion: np.ndarray) -> None:
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


def _add_cyst(lesion: np.ndarray) -> None:
    """Turn one half of the tumour core (along the first axis) into a cyst (PED 2024's CC label)."""
    core = np.isin(lesion, (NECROSIS, NON_ENHANCING))
    where = np.argwhere(core)
    if len(where) < 2:
        return
    cut = np.median(where[:, 0])
    half = core & (np.indices(lesion.shape)[0] > cut)
    if half.any() and half.sum() < core.sum():
        lesion[half] = CYST


# --------------------------------------------------------------------------
# Intensities and bias field
# --------------------------------------------------------------------------


def _bias_field(rng: np.random.Generator, shape, brain_box, brain: np.ndarray) -> np.ndarray:
    """A smooth multiplicative field over the whole volume: exp of low-frequency cosines.

    log b = sum of c * cos(kx pi x) cos(ky pi y) cos(kz pi z) over
    1 <= kx + ky + kz <= 3 (x, y, z in [0, 1]) with coefficients shrinking
    with frequency: a tilt across the head plus centre-versus-edge shading,
    like receive-coil sensitivity.  Scaled so it spans about 0.7..1.4 over
    the brain, drawn again while too lopsided for that, and centred so its
    geometric mean over the brain is 1 (N4 recovers a field only up to a
    constant, so scoring compares fields normalised the same way).  Values
    are rounded to multiples of _BIAS_QUANTUM so the stored float32 file compresses.
    """
    orders = [(a, b, c) for a in range(4) for b in range(4) for c in range(4) if 1 <= a + b + c <= 3]
    bases = [np.cos(np.pi * np.outer((np.arange(n) + 0.5) / n, np.arange(4))).astype(np.float32) for n in shape]
    stride = max(1, min(shape) // 48)  # a coarse grid suffices for big volumes; edges matter in small ones
    sample = tuple(slice(s.start, s.stop, stride) for s in brain_box)
    sample_bases = [b[s] for b, s in zip(bases, sample)]
    sample_mask = brain[tuple(slice(None, None, stride) for _ in range(3))]
    best = None
    for _ in range(50):
        weights = np.zeros((4, 4, 4))
        for a, b, c in orders:
            weights[a, b, c] = rng.standard_normal() / (a + b + c)
        values = _separable_field(weights, sample_bases)[sample_mask]
        values -= values.mean()
        skew = max(values.max() / -values.min(), -values.min() / values.max())
        if best is None or skew < best[0]:
            best = (skew, weights, values.max() - values.min())
        if skew <= _BIAS_SKEW_LIMIT:
            break
    _, weights, spread = best
    span = _BIAS_LOG_SPAN * rng.uniform(0.9, 1.0)
    field = _separable_field(weights * (span / spread), bases)
    field -= np.mean(field[brain_box], where=brain)
    np.exp(field, out=field)
    field *= np.float32(1 / _BIAS_QUANTUM)  # in place: this runs on the full volume
    np.rint(field, out=field)
    field *= np.float32(_BIAS_QUANTUM)
    return field


def _tissue_intensities(rng: np.random.Generator, modality: str, extra: bool = False) -> np.ndarray:
    """Per-patient tissue means of one modality: base contrast, tissue jitter, scanner gain.

    Cavity and cyst are jittered only when the patient has them (``extra``),
    so cohorts without them draw the same random numbers as before they existed.
    """
    base = np.array(_BASE_INTENSITY[modality])
    jitter = rng.uniform(1 - _TISSUE_JITTER, 1 + _TISSUE_JITTER, base.size)
    gain = rng.uniform(*_GAIN_RANGE)
    means = base * jitter * gain
    extras = np.array(_EXTRA_INTENSITY[modality]) * gain
    if extra:
        extras = extras * rng.uniform(1 - _TISSUE_JITTER, 1 + _TISSUE_JITTER, extras.size)
    return np.concatenate([means, extras]).astype(np.float32)


def _clean_image(rng, modality, tissues, brain, texture, tumour_window, tumour_texture,
                 extra: bool = False) -> np.ndarray:
    """Bias-free image on the brain crop: tissue means, partial-volume blur, texture, noise.

    Brain voxels are floored at _MIN_CLEAN (dark CSF plus noise must stay
    positive, as in skull-stripped BraTS); background is exactly 0.
    """
    means = _tissue_intensities(rng, modality, extra)
    image = ndimage.gaussian_filter(means[tissues], _PARTIAL_VOLUME_SIGMA, truncate=2.0, mode="constant")
    image *= texture
    image[tumour_window] *= tumour_texture
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noise *= np.float32(_NOISE_FRACTION * means[WM])
    image += noise
    np.maximum(image, np.float32(_MIN_CLEAN), out=image)
    image *= brain
    return image


def apply_bias(clean: np.ndarray, bias: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The stored image: round(clean * bias) as int16, >= 1 in the brain and exactly 0 outside."""
    biased = clean * bias
    np.rint(biased, out=biased)
    np.clip(biased, 1, np.iinfo(np.int16).max, out=biased)
    biased *= brain
    return biased.astype(np.int16)


# --------------------------------------------------------------------------
# Patients
# --------------------------------------------------------------------------


def make_patient(
    patient_id: str,
    index: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    grade: str = "HGG",
    seed: int = 0,
    challenge: str = DEFAULT_CHALLENGE,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> SyntheticPatient:
    """Generate one patient; a pure function of (seed, index, shape, grade, challenge, spacing)."""
    patient, _ = synthesize(patient_id, index, shape, grade, seed, challenge, spacing)
    return patient


def synthesize(
    patient_id: str,
    index: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    grade: str = "HGG",
    seed: int = 0,
    challenge: str = DEFAULT_CHALLENGE,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[SyntheticPatient, dict[str, np.ndarray]]:
    """Like make_patient, also returning the clean (bias-free) float32 images.

    The clean images let tests and benchmarks check that each stored image is
    exactly ``apply_bias(clean, bias, brain)``.
    """
    shape = validate_shape(shape)
    if grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES}, got {grade!r}")
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    entry = challenges.get(challenge)
    rng = np.random.default_rng([seed, index])

    anatomy = _make_anatomy(rng, shape)
    window, lesion = _place_lesion(rng, shape, anatomy, grade)
    keys = {label.key for label in entry.labels}
    if "RC" in keys:
        _add_cavity(rng, lesion)
    if "CC" in keys:
        _add_cyst(lesion)
    extra = bool(keys & {"RC", "CC"})
    tumour = lesion > 0
    anatomy.tissues[window][tumour] = lesion[tumour]
    box, tissues = anatomy.box, anatomy.tissues
    brain = anatomy.depth < 1

    coords = _unit_coords(shape, box)
    texture = 1 + _TEXTURE_AMPLITUDE * _random_field(rng, _node_counts(shape, (n // 8 for n in shape)), coords)
    unit = (np.arange(lesion.shape[0]) + 0.5) / lesion.shape[0]
    tumour_noise = _random_field(rng, (6, 6, 6), (unit, unit, unit))
    tumour_texture = 1 + _TUMOUR_TEXTURE_AMPLITUDE * tumour_noise * tumour

    full_brain = np.zeros(shape, dtype=bool)
    full_brain[box] = brain
    full_tissues = np.zeros(shape, dtype=np.uint8)
    full_tissues[box] = tissues
    seg = seg_lut(entry)[full_tissues]

    images, bias_fields, cleans = {}, {}, {}
    for modality in entry.modalities:
        clean = _clean_image(rng, modality, tissues, brain, texture, window, tumour_texture, extra)
        bias = _bias_field(rng, shape, box, brain)
        image = np.zeros(shape, dtype=np.int16)
        image[box] = apply_bias(clean, bias[box], brain)
        full_clean = np.zeros(shape, dtype=np.float32)
        full_clean[box] = clean
        images[modality], bias_fields[modality], cleans[modality] = image, bias, full_clean

    patient = SyntheticPatient(
        patient_id=patient_id,
        grade=grade,
        images=images,
        seg=seg,
        bias_fields=bias_fields,
        brain_mask=full_brain,
        affine=brats_affine(shape, spacing),
        tissues=full_tissues,
        challenge=challenge,
    )
    return patient, cleans


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def nifti_bytes(array: np.ndarray, affine: np.ndarray, compressed: bool = True) -> bytes:
    """NIfTI bytes as the project writes them, at a fast gzip level (cohorts are large)."""
    return shared_nifti_bytes(array, affine, compress=compressed, level=_GZIP_LEVEL)


def _ensure_dir(path: str) -> None:
    """mkdir -p on local paths; object stores (gs://, s3://) have no directories to make."""
    storage.makedirs(path)


_write = write_bytes


def patient_paths(output_dir: str, patient_id: str, compressed: bool = True,
                  challenge: str = DEFAULT_CHALLENGE) -> dict[str, str]:
    """Channel (modality, "seg", "<modality>_bias") -> path of each file of one patient."""
    ext = ".nii.gz" if compressed else ".nii"
    layout = layouts.get_layout(challenge)
    folder = storage.join(output_dir, patient_id)
    modalities = challenges.get(challenge).modalities
    paths = {c: storage.join(folder, layout.expected_name(patient_id, c, ext)) for c in modalities + ("seg",)}
    for m in modalities:
        paths[f"{m}_bias"] = storage.join(output_dir, BIAS_DIR, f"{patient_id}_{m}_bias.nii.gz")
    return paths


def write_patient(patient: SyntheticPatient, output_dir: str, compressed: bool = True) -> None:
    """Write the modalities and seg (the challenge's layout) and the true bias fields (always .nii.gz)."""
    paths = patient_paths(output_dir, patient.patient_id, compressed, patient.challenge)
    _ensure_dir(storage.join(output_dir, patient.patient_id))
    _ensure_dir(storage.join(output_dir, BIAS_DIR))
    modalities = tuple(patient.images)
    jobs = [(paths[m], patient.images[m], compressed) for m in modalities]
    jobs.append((paths["seg"], patient.seg.astype(np.uint8), compressed))
    jobs += [(paths[f"{m}_bias"], patient.bias_fields[m].astype(np.float32), True) for m in modalities]

    def write_one(job) -> None:
        path, array, gz = job
        _write(path, nifti_bytes(array, patient.affine, gz))

    # zlib releases the GIL: compressing the nine files in threads uses every core.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        list(pool.map(write_one, jobs))


def name_mapping_csv(patient_ids: Sequence[str], grades: Sequence[str]) -> str:
    """``name_mapping.csv`` text: BraTS 2020 columns, older-release ids "NA" (no such history)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(NAME_MAPPING_COLUMNS)
    for patient_id, grade in zip(patient_ids, grades):
        writer.writerow([grade, "NA", "NA", "NA", "NA", patient_id])
    return buffer.getvalue()


def write_cohort(
    output_dir: str,
    num_patients: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
    lgg_fraction: float = 0.25,
    compressed: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
    challenge: str = DEFAULT_CHALLENGE,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> list[str]:
    """Generate and write patients 1..num_patients (plus name_mapping.csv for BraTS 2020); returns their ids.

    name_mapping.csv is written last, so its presence marks a complete cohort.
    ``progress(done, total, patient_id)`` is called after each patient.
    """
    shape = validate_shape(shape)
    grades = assign_grades(num_patients, seed, lgg_fraction)
    _ensure_dir(output_dir)
    ids = []
    for index in range(1, num_patients + 1):
        patient_id = patient_id_for(index, challenge)
        patient = make_patient(patient_id, index, shape, grades[index - 1], seed, challenge, spacing)
        write_patient(patient, output_dir, compressed)
        ids.append(patient_id)
        if progress is not None:
            progress(index, num_patients, patient_id)
    if challenges.get(challenge).naming.grade_table == NAME_MAPPING:
        _write(storage.join(output_dir, NAME_MAPPING), name_mapping_csv(ids, grades).encode())
    return ids
