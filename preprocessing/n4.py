"""N4 bias field correction (antspyx) of a patient's modalities inside the brain mask.

ITK runs each N4 on one thread.  Results differ in the last digits between
ITK thread counts, and ITK's own threads gained little here, so a patient
that may use several cores runs its channels' N4 side by side in worker
processes instead (antspyx holds the GIL for a whole N4 call, so threads of
one process would only take turns).  The output is then the same bytes
whether a patient is preprocessed by a Beam worker on one core or by
interactive prediction on all of them.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
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
    """Every channel bias-corrected, up to ``threads`` channels at a time; the same bytes for any ``threads``.

    With ``threads`` > 1 the channels run in a pool of worker processes kept
    for the life of this process (started from a forkserver, never by forking
    a process that runs TensorFlow's threads), so an app or a prediction loop
    pays the workers' start-up once.  Raises :class:`ChannelError` naming the
    first channel (in channel order) whose data N4 cannot fit.
    """
    if threads <= 1 or len(volumes) == 1:
        results = (_correct_one(v, mask, spacing, params) for v in volumes)  # lazily: stop at a bad channel
    else:
        results = _in_pool(min(threads, len(volumes)), volumes, mask, spacing, params)
    corrected = []
    for index, result in enumerate(results):
        if isinstance(result, str):
            raise ChannelError(index, result)
        corrected.append(result)
    return corrected


def _correct_one(volume, mask, spacing, params) -> np.ndarray | str:
    """The corrected volume, or the reason N4 cannot fit this channel (a value, so it crosses processes)."""
    try:
        return correct(volume, mask, spacing, params)[0]
    except InputError as exc:
        return str(exc)


_pool: concurrent.futures.ProcessPoolExecutor | None = None
_pool_size = 0


def _in_pool(workers: int, volumes, mask, spacing, params) -> list:
    global _pool, _pool_size
    if _pool is None or _pool_size != workers:
        if _pool is not None:
            _pool.shutdown()
        _pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        _pool_size = workers
    futures = [_pool.submit(_correct_one, v, mask, spacing, params) for v in volumes]
    try:
        return [f.result() for f in futures]
    except concurrent.futures.process.BrokenProcessPool as exc:  # a native crash in a worker
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None
        return [f"N4 worker process crashed ({exc})"] * len(volumes)
