"""N4 bias field correction (antspyx) of a patient's modalities inside the brain mask.

ITK runs each N4 on one thread.  Results differ in the last digits between
ITK thread counts, and ITK's own threads gained little here, so a patient
that may use several cores runs its channels' N4 side by side instead (the
native code releases the GIL, so threads of this process suffice): the output
is then the same bytes whether a patient is preprocessed by a Beam worker on
one core or by interactive prediction on all of them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import numpy as np

# Read by ITK once, when antspyx first loads; set just before that import.
ITK_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"


class InputError(ValueError):
    """The data makes a stage impossible (too few voxels, a degenerate field): bad input, not a bug."""


class ChannelError(Exception):
    """N4 failed on the input of channel ``index``; ``reason`` says why."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"channel {index}: {reason}")
        self.index, self.reason = index, reason


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
    """antspyx, loaded on first use with ITK pinned to one thread per N4 (see the module docstring)."""
    os.environ.setdefault(ITK_THREADS_ENV, "1")
    import ants  # deferred: loading ITK costs a second, and only N4 and get_mask need it

    return ants


def estimate_bias(volume: np.ndarray, mask: np.ndarray, spacing, params: N4Params) -> np.ndarray:
    """The multiplicative bias field N4 estimates for ``volume`` (float32, 1 outside fit).

    The mask is always given: with ``mask=None`` antspyx fits the whole box,
    air included, which is several times slower and no better.
    """
    ants = _ants()
    fit_mask = mask & (volume > 0)  # N4 works on log intensities
    if fit_mask.sum() < 64:
        raise InputError(f"only {int(fit_mask.sum())} positive brain voxels, too few for N4")
    image = ants.from_numpy(np.ascontiguousarray(volume, dtype=np.float32), spacing=tuple(spacing))
    weight = ants.from_numpy(fit_mask.astype(np.float32), spacing=tuple(spacing))
    try:
        field = ants.n4_bias_field_correction(
            image,
            mask=weight,
            shrink_factor=params.shrink_factor,
            convergence={"iters": list(params.iterations), "tol": params.tolerance},
            spline_param=[params.spline_mesh] * volume.ndim,  # a mesh size; a scalar would mean a spline distance in mm
            return_bias_field=True,
        ).numpy()
    except RuntimeError as exc:  # ITK's exceptions on degenerate input reach Python as RuntimeError
        raise InputError(f"N4 failed in ITK: {exc}") from exc
    if not np.all(np.isfinite(field[fit_mask])) or np.any(field[fit_mask] <= 0):
        raise InputError("N4 returned a non-finite or non-positive bias field")
    return field.astype(np.float32)


def correct(volume: np.ndarray, mask: np.ndarray, spacing, params: N4Params) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected volume (0 outside the brain) and the estimated field."""
    field = estimate_bias(volume, mask, spacing, params)
    corrected = np.zeros(volume.shape, dtype=np.float32)
    corrected[mask] = volume[mask] / field[mask]
    return corrected, field


def correct_channels(volumes: list[np.ndarray], mask: np.ndarray, spacing, params: N4Params,
                     threads: int = 1) -> list[np.ndarray]:
    """Every channel bias-corrected, ``threads`` channels at a time; same bytes for any ``threads``.

    Raises :class:`ChannelError` naming the first channel (in channel order)
    whose data N4 cannot fit.
    """
    def one(index: int) -> np.ndarray:
        try:
            return correct(volumes[index], mask, spacing, params)[0]
        except InputError as exc:
            raise ChannelError(index, str(exc)) from exc

    if threads <= 1 or len(volumes) == 1:
        return [one(i) for i in range(len(volumes))]
    _ants()  # load antspyx once, before the threads race to import it
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(threads, len(volumes))) as pool:
        futures = [pool.submit(one, i) for i in range(len(volumes))]
        return [f.result() for f in futures]  # in channel order, so the first bad channel is reported
