"""What a synthetic patient's scans show: tissue intensities per modality, noise, and the bias field.

Split from ``synthetic.cohort`` so the imaging model reads on its own: the
clinical contrasts of each tissue per modality, jitter and scanner gain, the
partial-volume blur, noise and floor of a clean image (:func:`clean_image`),
the smooth multiplicative bias field N4 is scored against
(:func:`bias_field`) and how it is applied to the stored int16 image
(:func:`apply_bias`).  Draws come from the ``rng`` it is given, in the
order ``synthetic.cohort.synthesize`` calls them.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from synthetic.anatomy import WM, separable_field

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
_PARTIAL_VOLUME_SIGMA = 0.6  # voxels; blurs tissue edges like a 1 mm resampling does
_MIN_CLEAN = 2.0  # clean brain intensity floor, so that round(clean * bias) >= 1

# Bias field: log-field spans about ln(1.4 / 0.7) over the brain.
_BIAS_LOG_SPAN = math.log(2.0)
_BIAS_SKEW_LIMIT = 1.25  # max(log b) / -min(log b) accepted over the brain
_BIAS_QUANTUM = 2.0**-10  # ~0.1 %: finer than int16 rounding, and the zero low mantissa bits halve the files


def bias_field(rng: np.random.Generator, shape, brain_box, brain: np.ndarray) -> np.ndarray:
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
        values = separable_field(weights, sample_bases)[sample_mask]
        values -= values.mean()
        skew = max(values.max() / -values.min(), -values.min() / values.max())
        if best is None or skew < best[0]:
            best = (skew, weights, values.max() - values.min())
        if skew <= _BIAS_SKEW_LIMIT:
            break
    _, weights, spread = best
    span = _BIAS_LOG_SPAN * rng.uniform(0.9, 1.0)
    field = separable_field(weights * (span / spread), bases)
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


def clean_image(rng, modality, tissues, brain, texture, tumour_window, tumour_texture,
                 extra: bool = False, adjust=None) -> np.ndarray:
    """Bias-free image on the brain crop: tissue means, partial-volume blur, texture, noise.

    Brain voxels are floored at _MIN_CLEAN (dark CSF plus noise must stay
    positive, as in skull-stripped BraTS); background is exactly 0.
    ``adjust(means)`` changes the drawn tissue means (the hard profile's
    tumour contrast close to grey matter) without changing any draw.
    """
    means = _tissue_intensities(rng, modality, extra)
    if adjust is not None:
        means = adjust(means)
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
