"""N4 bias field correction (antspyx) of one modality inside the brain mask."""

from __future__ import annotations

import dataclasses

import numpy as np

import beam_pipeline  # noqa: F401  (pins ITK threads before ants loads)


@dataclasses.dataclass(frozen=True)
class N4Params:
    """Parameters of ``ants.n4_bias_field_correction``; see configs/preprocess."""

    shrink_factor: int = 4
    iterations: tuple[int, ...] = (50, 50, 50, 50)
    tolerance: float = 1e-7
    spline_mesh: int = 1

    @classmethod
    def from_config(cls, cfg) -> "N4Params":
        return cls(
            shrink_factor=int(cfg["shrink_factor"]),
            iterations=tuple(int(i) for i in cfg["iterations"]),
            tolerance=float(cfg["tolerance"]),
            spline_mesh=int(cfg["spline_mesh"]),
        )


def _ants():
    import ants  # deferred: loading ITK costs a second, and only workers need it

    return ants


def estimate_bias(volume: np.ndarray, mask: np.ndarray, spacing, params: N4Params) -> np.ndarray:
    """The multiplicative bias field N4 estimates for ``volume`` (float32, 1 outside fit).

    The mask is always given: with ``mask=None`` antspyx fits the whole box,
    air included, which is several times slower and no better.
    """
    ants = _ants()
    fit_mask = mask & (volume > 0)  # N4 works on log intensities
    if fit_mask.sum() < 64:
        raise ValueError(f"only {int(fit_mask.sum())} positive brain voxels, too few for N4")
    image = ants.from_numpy(np.ascontiguousarray(volume, dtype=np.float32), spacing=tuple(spacing))
    weight = ants.from_numpy(fit_mask.astype(np.float32), spacing=tuple(spacing))
    field = ants.n4_bias_field_correction(
        image,
        mask=weight,
        shrink_factor=params.shrink_factor,
        convergence={"iters": list(params.iterations), "tol": params.tolerance},
        spline_param=[params.spline_mesh] * volume.ndim,  # a mesh size; a scalar would mean a spline distance in mm
        return_bias_field=True,
    ).numpy()
    if not np.all(np.isfinite(field[fit_mask])) or np.any(field[fit_mask] <= 0):
        raise ValueError("N4 returned a non-finite or non-positive bias field")
    return field.astype(np.float32)


def correct(volume: np.ndarray, mask: np.ndarray, spacing, params: N4Params) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected volume (0 outside the brain) and the estimated field."""
    field = estimate_bias(volume, mask, spacing, params)
    corrected = np.zeros(volume.shape, dtype=np.float32)
    corrected[mask] = volume[mask] / field[mask]
    return corrected, field
