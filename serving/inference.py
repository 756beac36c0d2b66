"""Sliding-window inference: a model trained on patches, applied to a whole volume.

The network sees ``patch``-sized windows that overlap by ``overlap`` (50 % by
default, as nnU-Net).  Each window's softmax is weighted by a Gaussian centred
on the window (sigma = patch / 8), because a convolutional network is least
sure near a patch's border, where it saw the least context.  Optional flip
test-time augmentation averages the softmax over mirrored copies of every
window.  Everything here is numpy in, numpy out; the model is any callable
that maps a float32 batch ``(N, X, Y, Z, C)`` to probabilities ``(N, X, Y, Z, K)``:
softmax over classes, or one sigmoid per region (a ``target=regions`` model,
whose averaged probabilities :func:`to_classes` decodes by the rule of
:mod:`shared.regions`).
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np

from shared.regions import RegionDecoding

TTA_MODES = ("none", "axes", "all")

PredictFn = Callable[[np.ndarray], np.ndarray]


def gaussian_weights(patch: Sequence[int], sigma_scale: float = 1 / 8) -> np.ndarray:
    """Separable Gaussian importance map, peak 1, never exactly 0."""
    axes = []
    for size in patch:
        centre, sigma = (size - 1) / 2, max(size * sigma_scale, 1e-3)
        axes.append(np.exp(-0.5 * ((np.arange(size) - centre) / sigma) ** 2))
    weights = np.einsum("i,j,k->ijk", *axes).astype(np.float32)
    weights /= weights.max()
    floor = weights[weights > 0].min()
    return np.maximum(weights, floor)


def window_starts(dim: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of ``patch`` covering ``dim`` with at least ``overlap``.

    Windows are spread evenly from 0 to ``dim - patch``, so the last one ends
    at the volume's edge instead of hanging over it.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if dim <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    count = math.ceil((dim - patch) / step) + 1
    return sorted({int(round(i * (dim - patch) / (count - 1))) for i in range(count)})


def flip_sets(mode: str) -> list[tuple[int, ...]]:
    """Spatial axes (of a batch: 1, 2, 3) to mirror for each TTA pass."""
    if mode == "none":
        return [()]
    if mode == "axes":  # identity and one mirror per axis: 4 passes
        return [(), (1,), (2,), (3,)]
    if mode == "all":  # every combination of mirrors: 8 passes
        return [c for r in range(4) for c in itertools.combinations((1, 2, 3), r)]
    raise ValueError(f"unknown tta mode {mode!r}; choose one of {TTA_MODES}")


def _predict_with_tta(predict: PredictFn, batch: np.ndarray, flips: list[tuple[int, ...]]) -> np.ndarray:
    total = None
    for axes in flips:
        x = np.flip(batch, axis=axes) if axes else batch
        y = np.asarray(predict(np.ascontiguousarray(x)), dtype=np.float32)
        y = np.flip(y, axis=axes) if axes else y
        total = y if total is None else total + y
    return total / len(flips)


def _pad_to(image: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad (the normalised background value) so every axis holds a patch."""
    pads = [(0, 0)] * image.ndim
    region = []
    for axis, size in enumerate(patch):
        extra = max(0, size - image.shape[axis])
        pads[axis] = (extra // 2, extra - extra // 2)
        region.append(slice(extra // 2, extra // 2 + image.shape[axis]))
    if not any(p != (0, 0) for p in pads):
        return image, tuple(region)
    return np.pad(image, pads), tuple(region)


def auto_batch_size(patch: Sequence[int], budget_voxels: int = 2 * 128 ** 3, most: int = 32) -> int:
    """Windows per model call for a voxel budget (1 for 128^3 and larger windows)."""
    return int(max(1, min(most, budget_voxels // int(np.prod(patch)) // 2)))


def sliding_window(
    predict: PredictFn,
    image: np.ndarray,
    patch: Sequence[int],
    overlap: float = 0.5,
    batch_size: int | None = None,
    tta: str = "none",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Class probabilities ``(X, Y, Z, K)`` for a whole ``(X, Y, Z, C)`` image.

    A ``patch`` size None is the image's own size on that axis (the whole
    record, for records that differ in shape); a window larger than the
    image pads it with zeros.

    ``batch_size`` windows go to the model per call (default: as many as make
    about two 128^3 windows' worth of voxels, so small windows do not pay the
    per-call overhead one by one while big ones stay within memory).
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (X, Y, Z, C), got shape {image.shape}")
    patch = tuple(image.shape[axis] if p is None else int(p) for axis, p in enumerate(patch))  # None: whole axis
    padded, region = _pad_to(image.astype(np.float32, copy=False), patch)
    weights = gaussian_weights(patch)[..., None]
    starts = list(itertools.product(*(window_starts(d, p, overlap) for d, p in zip(padded.shape[:3], patch))))
    flips = flip_sets(tta)
    batch_size = batch_size or auto_batch_size(patch)
    accum = norm = None
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        windows = [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in chunk]
        probs = _predict_with_tta(predict, np.stack([padded[w] for w in windows]), flips)
        if accum is None:
            accum = np.zeros(padded.shape[:3] + (probs.shape[-1],), dtype=np.float32)
            norm = np.zeros(padded.shape[:3] + (1,), dtype=np.float32)
        for w, p in zip(windows, probs):
            accum[w] += p * weights
            norm[w] += weights
        if progress:
            progress(min(first + batch_size, len(starts)), len(starts))
    return (accum / norm)[region]


def to_classes(probs: np.ndarray, decoding: RegionDecoding | None = None) -> np.ndarray:
    """Classes (uint8) from probabilities: argmax of a softmax, or the regions' innermost-wins rule."""
    if decoding is not None:
        return decoding.to_classes(probs)
    return np.argmax(probs, axis=-1).astype(np.uint8)


def keras_predict_fn(model) -> PredictFn:
    """Wrap a Keras model so repeated same-shape batches reuse one traced graph."""

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(batch), dtype=np.float32)

    return predict


def mean_predict_fn(predict_fns: Sequence[PredictFn]) -> PredictFn:
    """An ensemble: the mean of the members' softmax probabilities on every batch.

    Averaging per batch gives the mean of the members' sliding-window
    outputs (the Gaussian weighting and the TTA mean are linear), with one
    accumulator instead of one whole-volume array per member.
    """
    fns = list(predict_fns)
    if not fns:
        raise ValueError("an ensemble needs at least one model")
    if len(fns) == 1:
        return fns[0]

    def predict(batch: np.ndarray) -> np.ndarray:
        total = None
        for fn in fns:
            probs = np.asarray(fn(batch), dtype=np.float32)
            if total is not None and probs.shape != total.shape:
                raise ValueError(f"ensemble members disagree on the output shape: {probs.shape} vs {total.shape}")
            total = probs if total is None else total + probs
        return total / len(fns)

    return predict
