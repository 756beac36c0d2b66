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

import atexit
import concurrent.futures
import dataclasses
import multiprocessing
import os

import numpy as np
import threadpoolctl

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


def _shrink_grid(n: int, factor: int) -> tuple[int, int]:
    """(first voxel, count) of every ``factor``-th voxel along an axis of ``n``, centred like ITK's ShrinkImageFilter."""
    count = max(1, n // factor)
    return max(0, ((n - 1) - (count - 1) * factor) // 2), count


def _upsample_axis_weights(n: int, first: int, count: int, factor: int) -> np.ndarray:
    """(n, count) linear-interpolation weights from the shrunk grid back to every voxel (constant beyond its ends)."""
    x = np.clip((np.arange(n) - first) / factor, 0, count - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, count - 1)
    weights = np.zeros((n, count), dtype=np.float32)
    np.add.at(weights, (np.arange(n), lo), (1 - (x - lo)).astype(np.float32))
    np.add.at(weights, (np.arange(n), hi), (x - lo).astype(np.float32))
    return weights


@dataclasses.dataclass
class _Shrunk:
    """A channel on the coarse grid N4 fits (every ``factor``-th voxel), and where that grid lies."""

    volume: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, ...]
    grids: list[tuple[int, int]]  # per axis: (first voxel, count)
    factor: int


def _shrink(volume: np.ndarray, mask: np.ndarray, spacing, factor: int) -> _Shrunk:
    fit_mask = mask & (volume > 0)  # N4 works on log intensities
    if fit_mask.sum() < 64:
        raise InputError(f"only {int(fit_mask.sum())} positive brain voxels, too few for N4")
    factor = max(1, factor)
    grids = [_shrink_grid(n, factor) for n in volume.shape]
    picks = tuple(slice(first, first + count * factor, factor) for first, count in grids)
    small_mask = fit_mask[picks]
    if small_mask.sum() < 64:
        raise InputError(f"only {int(small_mask.sum())} positive brain voxels after shrinking, too few for N4")
    return _Shrunk(np.ascontiguousarray(volume[picks], dtype=np.float32), small_mask,
                   tuple(float(s) * factor for s in spacing), grids, factor)


def _fit(shrunk: _Shrunk, params: N4Params) -> np.ndarray:
    """N4's bias field on the coarse grid (the only step that runs ITK)."""
    ants = _ants()
    image = ants.from_numpy(shrunk.volume, spacing=shrunk.spacing)
    weight = ants.from_numpy(shrunk.mask.astype(np.float32), spacing=shrunk.spacing)
    try:
        field = ants.n4_bias_field_correction(
            image,
            mask=weight,
            shrink_factor=1,
            convergence={"iters": list(params.iterations), "tol": params.tolerance},
            spline_param=[params.spline_mesh] * shrunk.volume.ndim,  # a mesh size; a scalar would mean a distance in mm
            return_bias_field=True,
        ).numpy()
    except RuntimeError as exc:  # ITK's exceptions on degenerate input reach Python as RuntimeError
        raise InputError(f"N4 failed in ITK: {exc}") from exc
    if not np.all(np.isfinite(field)) or np.any(field <= 0):
        raise InputError("N4 returned a non-finite or non-positive bias field")
    return field


def _expand(small_field: np.ndarray, shrunk: _Shrunk, shape) -> np.ndarray:
    """The coarse field on the full grid: separable linear interpolation of its log."""
    wx, wy, wz = (_upsample_axis_weights(n, first, count, shrunk.factor) for n, (first, count) in zip(shape, shrunk.grids))
    # One BLAS thread: OpenBLAS's extra threads spin after these small products.
    # On a 240x240x155 patient they added 0.45 CPU-s (13 %) to 3.5 s of wall
    # time without shortening it, and in a Beam job they take that CPU from the
    # worker on the next core (bench-preprocess, BUILD_NOTES).
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        log_field = np.log(small_field, dtype=np.float32) @ wz.T  # (x', y', z)
        log_field = wy @ log_field  # (x', y, z)
        log_field = (wx @ log_field.reshape(len(log_field), -1)).reshape(shape)
    return np.exp(log_field, out=log_field)


def estimate_bias(volume: np.ndarray, mask: np.ndarray, spacing, params: N4Params) -> np.ndarray:
    """The multiplicative bias field N4 estimates for ``volume`` (float32).

    The mask is always given: with ``mask=None`` antspyx fits the whole box,
    air included, which is several times slower and no better.

    The volume is shrunk here (every ``shrink_factor``-th voxel, as ITK's
    ShrinkImageFilter does) and N4 runs with ``shrink_factor=1`` on the small
    image; its log field is brought back to the full grid by separable linear
    interpolation.  Letting antspyx shrink instead costs about 0.5 CPU-s per
    volume on the full grid (shrink, B-spline reconstruction, corrected image)
    for the same field: it is a cubic B-spline with a few control points,
    smooth at the scale of the shrunk grid.
    """
    shrunk = _shrink(volume, mask, spacing, params.shrink_factor)
    return _expand(_fit(shrunk, params), shrunk, volume.shape)


def correct(volume: np.ndarray, mask: np.ndarray, spacing, params: N4Params) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected volume (0 outside the brain) and the estimated field."""
    field = estimate_bias(volume, mask, spacing, params)
    corrected = np.zeros(volume.shape, dtype=np.float32)
    corrected[mask] = volume[mask] / field[mask]
    return corrected, field


def correct_channels(volumes: list[np.ndarray], mask: np.ndarray, spacing, params: N4Params,
                     threads: int = 1) -> list[np.ndarray]:
    """Every channel bias-corrected, up to ``threads`` N4 fits at a time; the same bytes for any ``threads``.

    With ``threads`` > 1 the fits (ITK, on the coarse grids: small arrays to
    move) run in a pool of worker processes kept for the life of this process,
    started from a forkserver (never by forking a process that runs
    TensorFlow's threads), so an app or a prediction loop pays their start-up
    once; shrinking and interpolating stay here.  Raises
    :class:`ChannelError` naming the first channel (in channel order) whose
    data N4 cannot fit.
    """
    shrunk = []
    for index, volume in enumerate(volumes):
        try:
            shrunk.append(_shrink(volume, mask, spacing, params.shrink_factor))
        except InputError as exc:
            raise ChannelError(index, str(exc)) from exc
    if threads <= 1 or len(volumes) == 1:
        fields = (_fit_or_reason(s, params) for s in shrunk)  # lazily: stop at the first bad channel
    else:
        fields = _in_pool(min(threads, len(volumes)), shrunk, params)
    corrected = []
    for index, (volume, small, field) in enumerate(zip(volumes, shrunk, fields)):
        if isinstance(field, str):
            raise ChannelError(index, field)
        full = _expand(field, small, volume.shape)
        out = np.zeros(volume.shape, dtype=np.float32)
        out[mask] = volume[mask] / full[mask]
        corrected.append(out)
    return corrected


def _fit_or_reason(shrunk: _Shrunk, params: N4Params) -> np.ndarray | str:
    """The coarse field, or why N4 cannot fit this channel (a value, so it crosses processes)."""
    try:
        return _fit(shrunk, params)
    except InputError as exc:
        return str(exc)


_pool: concurrent.futures.ProcessPoolExecutor | None = None
_pool_size = 0


def _in_pool(workers: int, shrunk: list[_Shrunk], params: N4Params) -> list:
    global _pool, _pool_size
    if _pool is None or _pool_size != workers:
        if _pool is not None:
            _pool.shutdown()
        _pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        _pool_size = workers
        atexit.register(_pool.shutdown)  # before interpreter teardown, which would break the pool's own callbacks
    futures = [_pool.submit(_fit_or_reason, s, params) for s in shrunk]
    try:
        return [f.result() for f in futures]
    except concurrent.futures.process.BrokenProcessPool as exc:  # a native crash in a worker
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None
        return [f"N4 worker process crashed ({exc})"] * len(shrunk)
