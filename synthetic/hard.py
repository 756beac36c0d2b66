"""The hard profile of the synthetic cohort (``--hard``): what makes real BraTS cases hard.

The default cohort is easy on purpose (one centred tumour, clear contrasts,
a mild bias field): the demo and the tests need it to learn in minutes.  A
recipe tuned on it says little about real scans, so the hard profile adds,
per patient:

* anatomy that varies: a random affine (rotation, anisotropic scale,
  shift) and a smooth elastic displacement of the whole head, and
  ventricles enlarged by a random amount;
* a second tumour in about a third of patients (multi-focal disease);
* a patchy enhancing rim in some HGGs (small enhancing parts, hard for ET);
* tumour intensities pulled towards grey matter in one or two modalities
  (the lesion is visible only in the others);
* a scanner-like intensity non-linearity (a gamma curve per modality) and a
  stronger bias field.

Every draw comes from its own stream, ``default_rng([seed, index,
HARD_STREAM])``, so the default cohort's draws, and so its bytes, are those
it had before this profile existed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from synthetic.anatomy import BG, CSF, ENHANCING, GM, NECROSIS, NON_ENHANCING, OEDEMA, WM, random_field

HARD_STREAM = 0x4A2D
MULTIFOCAL_FRACTION = 1 / 3
PATCHY_ENHANCING_FRACTION = 0.5
_TUMOUR_CODES = (OEDEMA, ENHANCING, NECROSIS, NON_ENHANCING)
_MAX_ROTATION_DEG = 7.0
_SCALE_RANGE = (0.92, 1.06)  # source/target: above 1 shrinks the head in the image
_SHIFT_FRACTION = 0.03
_ELASTIC_FRACTION = 0.025  # displacement sd as a fraction of each side
_GAMMA_RANGE = (0.7, 1.4)
_BIAS_POWER_RANGE = (1.6, 2.2)  # log-field multiplied: ~0.5..2 over the brain instead of 0.7..1.4


def hard_rng(seed: int, index: int) -> np.random.Generator:
    """The hard profile's own random stream for one patient (the default stream stays untouched)."""
    return np.random.default_rng([seed, index, HARD_STREAM])


@dataclasses.dataclass(frozen=True)
class Profile:
    """One patient's hard-profile draws that later steps apply."""

    multifocal: bool
    patchy_enhancing: bool
    overlap: dict  # modality -> blend of tumour means towards grey matter, in [0, 1)
    gamma: dict  # modality -> exponent of the intensity curve
    bias_power: dict  # modality -> factor on the log bias field
    ventricle_growth: int  # voxels of dilation of the ventricles


def draw_profile(rng: np.random.Generator, modalities, shape) -> Profile:
    """The per-patient draws, in a fixed order."""
    multifocal = bool(rng.uniform() < MULTIFOCAL_FRACTION)
    patchy = bool(rng.uniform() < PATCHY_ENHANCING_FRACTION)
    count = 1 + int(rng.uniform() < 0.5) if len(modalities) > 1 else 0
    chosen = set(rng.choice(list(modalities), size=count, replace=False).tolist()) if count else set()
    overlap = {m: float(rng.uniform(0.55, 0.85)) if m in chosen else 0.0 for m in modalities}
    gamma = {m: float(rng.uniform(*_GAMMA_RANGE)) for m in modalities}
    power = {m: float(rng.uniform(*_BIAS_POWER_RANGE)) for m in modalities}
    growth = int(rng.integers(0, max(1, round(min(shape) / 40)) + 1))
    return Profile(multifocal, patchy, overlap, gamma, power, growth)


def enlarge_ventricles(tissues: np.ndarray, depth: np.ndarray, voxels: int) -> None:
    """Grow the deep CSF (ventricles) into the brain around them by ``voxels`` (in place; tumours are added later)."""
    if voxels <= 0:
        return
    deep = depth < 0.5
    grown = ndimage.binary_dilation((tissues == CSF) & deep, iterations=voxels)
    tissues[grown & deep & np.isin(tissues, (GM, WM))] = CSF


def patchy_enhancing(rng: np.random.Generator, lesion: np.ndarray) -> None:
    """Keep the enhancing rim only where a smooth field is high; the rest becomes necrosis (in place).

    At least a few enhancing voxels always stay, so ET is present but small.
    """
    enhancing = lesion == ENHANCING
    if enhancing.sum() < 8:
        return
    unit = (np.arange(lesion.shape[0]) + 0.5) / lesion.shape[0]
    field = random_field(rng, (5, 5, 5), (unit, unit, unit))
    keep = field > np.quantile(field[enhancing], rng.uniform(0.55, 0.8))
    lesion[enhancing & ~keep] = NECROSIS


def paste(tissues: np.ndarray, window, lesion: np.ndarray) -> None:
    """Write a lesion's tumour voxels into the tissue map without overwriting another tumour."""
    region = tissues[window]
    free = (lesion > 0) & ~np.isin(region, _TUMOUR_CODES)
    region[free] = lesion[free]


def overlap_means(blend: float, means: np.ndarray, modality: str) -> np.ndarray:
    """Tumour means pulled towards grey matter by ``blend`` (enhancement on T1ce is kept: ET must stay findable)."""
    out = means.copy()
    codes = [c for c in _TUMOUR_CODES if not (modality == "t1ce" and c == ENHANCING)]
    out[codes] = means[codes] + blend * (means[GM] - means[codes])
    return out


@dataclasses.dataclass(frozen=True)
class Warp:
    """Source voxel coordinates of every target voxel: a random affine plus a smooth elastic field."""

    coords: np.ndarray  # (3, X, Y, Z) float32

    def labels(self, volume: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(volume, self.coords, order=0, mode="constant", cval=0).astype(volume.dtype)

    def image(self, volume: np.ndarray) -> np.ndarray:
        return ndimage.map_coordinates(volume, self.coords, order=1, mode="constant", cval=0.0).astype(np.float32)


def make_warp(rng: np.random.Generator, shape) -> Warp:
    """Rotation about each axis up to _MAX_ROTATION_DEG, scale, shift and an elastic displacement."""
    dims = np.array(shape, dtype=np.float64)
    centre = (dims - 1) / 2
    angles = np.radians(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG, 3))
    matrix = np.diag(rng.uniform(*_SCALE_RANGE, 3))
    for axis, angle in enumerate(angles):
        i, j = [a for a in range(3) if a != axis]
        turn = np.eye(3)
        turn[i, i] = turn[j, j] = math.cos(angle)
        turn[i, j], turn[j, i] = -math.sin(angle), math.sin(angle)
        matrix = turn @ matrix
    shift = rng.uniform(-_SHIFT_FRACTION, _SHIFT_FRACTION, 3) * dims
    grid = np.indices(tuple(shape), dtype=np.float32).reshape(3, -1) - centre[:, None].astype(np.float32)
    coords = (matrix.astype(np.float32) @ grid).reshape((3,) + tuple(shape))
    units = [(np.arange(n) + 0.5) / n for n in shape]
    for axis in range(3):
        elastic = random_field(rng, (4, 4, 4), units) * np.float32(_ELASTIC_FRACTION * dims[axis])
        coords[axis] += elastic + np.float32(centre[axis] + shift[axis])
    return Warp(coords)


def scanner_curve(image: np.ndarray, brain: np.ndarray, gamma: float) -> np.ndarray:
    """A monotone non-linearity ``top * (x / top) ** gamma`` over the brain (top: its 99.5th percentile)."""
    values = image[brain]
    if values.size == 0:
        return image
    top = float(np.percentile(values, 99.5)) or 1.0
    out = np.zeros_like(image)
    out[brain] = top * np.power(np.maximum(values, 0) / top, gamma)
    return out


def stronger_bias(field: np.ndarray, power: float, quantum: float) -> np.ndarray:
    """``field ** power`` (the log field scaled, still smooth, geometric mean over the brain still 1), re-quantised."""
    out = np.power(field, np.float32(power))
    out *= np.float32(1 / quantum)
    np.rint(out, out=out)
    np.maximum(out, 1, out=out)
    out *= np.float32(quantum)
    return out


def whole_box(shape) -> tuple[slice, slice, slice]:
    return tuple(slice(0, int(n)) for n in shape)  # type: ignore[return-value]


def tumour_present(tissues: np.ndarray) -> bool:
    return bool(np.isin(tissues, _TUMOUR_CODES).any())


__all__ = ["BG", "HARD_STREAM", "Profile", "Warp", "draw_profile", "enlarge_ventricles", "hard_rng", "make_warp",
           "overlap_means", "paste", "patchy_enhancing", "scanner_curve", "stronger_bias", "whole_box"]
