"""Segmentation losses over one-hot masks and softmax (classes) or sigmoid (regions) probabilities.

Everything is cast to float32 first: under a ``mixed_float16`` policy the
Dice sums run over millions of voxels and would overflow float16 (max 65504),
and uint8 masks from the TFRecords must not be multiplied as integers.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

# Registered so a saved .keras model reloads with its compiled loss.
_serializable = keras.saving.register_keras_serializable(package="trainer")

EPSILON = 1e-7


def _as_float32(y_true, y_pred):
    return ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")


def _zero_for_an_empty_batch(loss):
    """``loss``, or 0 where the batch is empty, without looking at the predictions.

    Under MultiWorkerMirroredStrategy a replica with no validation patient
    left scores an empty batch.  TensorFlow's CPU conv3d returns its input
    for an empty batch, so the U-Net's "probabilities" there have the last
    hidden layer's channel count, and any loss of them fails on shapes
    (or is NaN: a mean over nothing).  Nothing was seen, so nothing is lost.
    """

    @functools.wraps(loss)
    def guarded(y_true, y_pred, *args, **kwargs):
        batch = ops.shape(y_true)[0]
        if isinstance(batch, int):  # a static batch size (JAX, eager): decide here
            return loss(y_true, y_pred, *args, **kwargs) if batch else ops.zeros((), "float32")
        return ops.cond(batch > 0, lambda: ops.cast(loss(y_true, y_pred, *args, **kwargs), "float32"),
                        lambda: ops.zeros((), "float32"))

    return guarded


@_serializable
@_zero_for_an_empty_batch
def soft_dice_loss(y_true, y_pred, smooth: float = 1e-5, include_background: bool = False):
    """1 - mean over classes of the soft Dice, pooled over batch and space.

    Pooling over the whole batch (rather than per sample) keeps classes that
    are absent from one crop from producing 0/0 noise; background is left out
    by default because it dominates the volume and would mask tumour errors.
    """
    y_true, y_pred = _as_float32(y_true, y_pred)
    if not include_background:
        y_true, y_pred = y_true[..., 1:], y_pred[..., 1:]
    return 1.0 - ops.mean(_pooled_dice(y_true, y_pred, smooth))


def _pooled_dice(y_true, y_pred, smooth: float = 1e-5):
    """Soft Dice of each channel (last axis), pooled over batch and space."""
    axes = tuple(range(len(y_true.shape) - 1))  # all but the channel axis
    intersection = ops.sum(y_true * y_pred, axis=axes)
    denominator = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return (2.0 * intersection + smooth) / (denominator + smooth)


@_serializable
@_zero_for_an_empty_batch
def cross_entropy_loss(y_true, y_pred):
    """Categorical cross-entropy on probabilities, mean over voxels.

    Probabilities are clipped to [1e-7, 1] so a confident wrong voxel costs a
    large but finite loss instead of inf/NaN.
    """
    y_true, y_pred = _as_float32(y_true, y_pred)
    y_pred = ops.clip(y_pred, EPSILON, 1.0)
    return ops.mean(-ops.sum(y_true * ops.log(y_pred), axis=-1))


# The unguarded bodies, for the losses below that combine them under one empty-batch guard of their own.
_soft_dice, _cross_entropy = soft_dice_loss.__wrapped__, cross_entropy_loss.__wrapped__


@_serializable
@_zero_for_an_empty_batch
def dice_ce_loss(y_true, y_pred):
    """Dice + CE (the default): Dice handles imbalance, CE gives smooth early gradients."""
    return _soft_dice(y_true, y_pred) + _cross_entropy(y_true, y_pred)


def _region_targets(y_true, membership):
    """One-hot classes ``(..., K)`` -> region masks ``(..., R)``: a class belongs to 0 or 1 of each region."""
    return ops.clip(ops.matmul(y_true, ops.convert_to_tensor(membership, "float32")), 0.0, 1.0)


def _weighted_mean(per_region, weights):
    """Mean over the last axis, each region counted ``weights`` times (equal when None)."""
    if weights is None:
        return ops.mean(per_region)
    w = ops.convert_to_tensor(weights, "float32")
    return ops.sum(per_region * w) / ops.sum(w)


def _region_dice_loss(targets, probabilities, weights):
    """1 - the (weighted) mean over regions of the soft Dice pooled over batch and space (like soft_dice_loss)."""
    return 1.0 - _weighted_mean(_pooled_dice(targets, probabilities), weights)


def _region_bce(targets, probabilities, weights):
    """BCE averaged over voxels per region, then the (weighted) mean over regions; clipped like
    :func:`cross_entropy_loss` (finite for a sure wrong voxel)."""
    p = ops.clip(probabilities, EPSILON, 1.0 - EPSILON)
    per_voxel = -(targets * ops.log(p) + (1.0 - targets) * ops.log(1.0 - p))
    return _weighted_mean(ops.mean(per_voxel, axis=tuple(range(len(targets.shape) - 1))), weights)


@_serializable
class RegionLoss(keras.losses.Loss):
    """Dice and/or BCE of sigmoid region outputs against the regions of one-hot class targets.

    nnU-Net's BraTS loss (``dice_ce``: batch soft Dice over every region +
    BCE).  The targets stay one-hot classes in the data pipeline and are
    mapped here through ``membership`` (``shared.regions.RegionDecoding``),
    so class and region models train on the same records; all regions count
    in the Dice (they have no background channel).  ``weights`` (one per
    region; equal when None, as nnU-Net has them) count a region more in both
    terms: a knob for a region the model finds hard.  Counting TC twice did
    not raise TC on the hard synthetic cohort (BUILD_NOTES.md, issue 23's
    fourth session), so no config sets it.
    """

    def __init__(self, membership, dice: bool = True, bce: bool = True, weights=None, name: str = "region_loss",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        if not (dice or bce):
            raise ValueError("a region loss needs dice, bce or both")
        self.membership = [[float(v) for v in row] for row in membership]
        self.dice, self.bce = bool(dice), bool(bce)
        self.weights = _check_region_weights(weights, len(self.membership[0])) if weights else None

    def call(self, y_true, y_pred):
        return _zero_for_an_empty_batch(self._region_loss)(y_true, y_pred)

    def _region_loss(self, y_true, y_pred):
        y_true, y_pred = _as_float32(y_true, y_pred)
        targets = _region_targets(y_true, self.membership)
        total = 0.0
        if self.dice:
            total = total + _region_dice_loss(targets, y_pred, self.weights)
        if self.bce:
            total = total + _region_bce(targets, y_pred, self.weights)
        return total

    def get_config(self):
        return {"name": self.name, "membership": self.membership, "dice": self.dice, "bce": self.bce,
                "weights": self.weights}


def _check_region_weights(weights, regions: int) -> list[float]:
    """``weights`` as floats, one per region, none negative and not all zero (ValueError otherwise)."""
    values = [float(w) for w in weights]
    if len(values) != regions or min(values) < 0 or not sum(values) > 0:
        raise ValueError(f"region weights must be {regions} non-negative numbers, not all 0, got {list(weights)}")
    return values


def region_loss(name: str, membership, weights=None) -> RegionLoss:
    """The region version of a config loss name: "ce" (BCE), "dice" or "dice_ce"; ``weights`` per region."""
    get_loss(name)  # the same names, the same error for a wrong one
    return RegionLoss(membership, dice=name in ("dice", "dice_ce"), bce=name in ("ce", "dice_ce"), weights=weights)


_LOSSES = {"ce": cross_entropy_loss, "dice": soft_dice_loss, "dice_ce": dice_ce_loss}
LOSS_NAMES = tuple(_LOSSES)


def get_loss(name: str):
    """The loss function for a config name: "ce", "dice" or "dice_ce"."""
    try:
        return _LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSS_NAMES)}") from None
