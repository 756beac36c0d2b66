"""Epoch-level Dice metrics for BraTS regions and classes.

Two kinds.  ``dice_<region>`` / ``dice_mean`` sum intersections and volumes
over every batch of the epoch and divide once at the end: the Dice of the
whole epoch's voxels pooled, not a mean of noisy per-batch ratios.
``patient_dice_<region>`` / ``patient_dice_mean`` score each sample (on
validation: each patient's whole cropped volume) on its own and average
those, which is how BraTS ranks (the mean of per-patient Dice, with
:mod:`shared.metrics`' rule for empty regions); the best checkpoint and early
stopping follow ``val_patient_dice_mean``.  Predictions are hard labels
(argmax), matching how BraTS scores submissions.  Regions and class names come
from the dataset's challenge (:mod:`shared.challenges`).
"""

from __future__ import annotations

import keras
from keras import ops

from shared.challenges import Challenge
from shared.metrics import ranked_regions

# Registered so a saved .keras model reloads with its compiled metrics.
_serializable = keras.saving.register_keras_serializable(package="trainer")


def _member_mask(y, members, num_classes: int):
    """float32 mask of voxels whose argmax class is in ``members``.

    Argmax over float32 works the same for one-hot uint8 truth and float16
    probabilities.
    """
    labels = ops.argmax(ops.cast(y, "float32"), axis=-1)
    hit = ops.zeros_like(labels, dtype="bool")
    for cls in members:
        if not 0 <= cls < num_classes:
            raise ValueError(f"class {cls} outside 0..{num_classes - 1}")
        hit = ops.logical_or(hit, ops.equal(labels, cls))
    return ops.cast(hit, "float32")


def _dice(intersection, pred_sum, true_sum):
    """2I/(P+T), defined as 1.0 when both prediction and truth are empty."""
    denominator = pred_sum + true_sum
    return ops.where(
        denominator > 0, 2.0 * intersection / ops.maximum(denominator, 1.0), ops.ones_like(denominator)
    )


class _MaskDice(keras.metrics.Metric):
    """Accumulated Dice of the voxels whose class is in ``members``."""

    def __init__(self, members, name, num_classes: int, **kwargs):
        super().__init__(name=name, dtype="float32", **kwargs)
        self.members = tuple(int(c) for c in members)
        self.num_classes = num_classes
        self.intersection = self.add_variable((), initializer="zeros", dtype="float32", name="intersection")
        self.pred_sum = self.add_variable((), initializer="zeros", dtype="float32", name="pred_sum")
        self.true_sum = self.add_variable((), initializer="zeros", dtype="float32", name="true_sum")

    def _predicted(self, y_pred):
        return _member_mask(y_pred, self.members, self.num_classes)

    def update_state(self, y_true, y_pred, sample_weight=None):
        # sample_weight is ignored: Dice is a set overlap, not a per-sample mean.
        t = _member_mask(y_true, self.members, self.num_classes)
        p = self._predicted(y_pred)
        self.intersection.assign_add(ops.sum(t * p))
        self.pred_sum.assign_add(ops.sum(p))
        self.true_sum.assign_add(ops.sum(t))

    def result(self):
        return _dice(self.intersection, self.pred_sum, self.true_sum)

    def get_config(self):
        return {"name": self.name, "members": list(self.members), "num_classes": self.num_classes}


@_serializable
class RegionDice(_MaskDice):
    """Dice of one region (a set of classes), named ``dice_<region>`` (``dice_wt``, ``dice_rc``)."""

    def __init__(self, members, name: str, num_classes: int, **kwargs):
        super().__init__(members, name=name, num_classes=num_classes, **kwargs)


@_serializable
class SigmoidRegionDice(_MaskDice):
    """Dice of a region model's output ``channel`` (probability > 0.5) against the truth's region.

    The truth stays one-hot classes; the region is its ``members``.
    """

    def __init__(self, members, channel: int, name: str, num_classes: int, **kwargs):
        super().__init__(members, name=name, num_classes=num_classes, **kwargs)
        self.channel = int(channel)

    def _predicted(self, y_pred):
        return ops.cast(ops.cast(y_pred[..., self.channel], "float32") > 0.5, "float32")

    def get_config(self):
        return {**super().get_config(), "channel": self.channel}


@_serializable
class MeanRegionDice(keras.metrics.Metric):
    """Mean of the regions' epoch Dice (each accumulated separately).

    It owns its own region accumulators so it does not depend on the other
    metrics being present in the compile list.
    """

    def __init__(self, regions: dict, num_classes: int, name: str = "dice_mean", channels: dict | None = None,
                 **kwargs):
        super().__init__(name=name, dtype="float32", **kwargs)
        self.num_classes = num_classes
        self.region_members = {str(k): tuple(int(c) for c in v) for k, v in regions.items()}
        # channels: region -> output channel of a region model (None: a class model, argmax)
        self.channels = {str(k): int(v) for k, v in channels.items()} if channels else None
        self.regions = [self._region_metric(r, m) for r, m in self.region_members.items()]

    def _region_metric(self, region, members):
        name = f"dice_{region.lower()}"
        if self.channels is None:
            return RegionDice(members, name=name, num_classes=self.num_classes)
        return SigmoidRegionDice(members, self.channels[region], name=name, num_classes=self.num_classes)

    def update_state(self, y_true, y_pred, sample_weight=None):
        for metric in self.regions:
            metric.update_state(y_true, y_pred)

    def result(self):
        return ops.mean(ops.stack([m.result() for m in self.regions]))

    def reset_state(self):
        for metric in self.regions:
            metric.reset_state()

    def get_config(self):
        return {"name": self.name, "regions": {k: list(v) for k, v in self.region_members.items()},
                "num_classes": self.num_classes, "channels": self.channels}


class _PatientDice(keras.metrics.Metric):
    """Mean over samples of each sample's Dice of the voxels whose class is in ``members``.

    A sample with the region empty in both prediction and truth scores 1, in
    only one 0 (BraTS, as :func:`shared.metrics.dice`).  On validation a
    sample is one patient, so this is the per-patient mean BraTS reports.
    """

    def __init__(self, members, name, num_classes: int, channel: int | None = None, **kwargs):
        super().__init__(name=name, dtype="float32", **kwargs)
        self.members = tuple(int(c) for c in members)
        self.num_classes = num_classes
        self.channel = None if channel is None else int(channel)  # a region model's sigmoid (> 0.5)
        self.total = self.add_variable((), initializer="zeros", dtype="float32", name="total")
        self.count = self.add_variable((), initializer="zeros", dtype="float32", name="count")

    def _predicted(self, y_pred):
        if self.channel is None:
            return _member_mask(y_pred, self.members, self.num_classes)
        return ops.cast(ops.cast(y_pred[..., self.channel], "float32") > 0.5, "float32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t = _member_mask(y_true, self.members, self.num_classes)
        p = self._predicted(y_pred)
        axes = tuple(range(1, len(t.shape)))
        per_sample = _dice(ops.sum(t * p, axis=axes), ops.sum(p, axis=axes), ops.sum(t, axis=axes))
        self.total.assign_add(ops.sum(per_sample))
        self.count.assign_add(ops.cast(ops.shape(per_sample)[0], "float32"))

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)  # 0 before any sample

    def get_config(self):
        return {"name": self.name, "members": list(self.members), "num_classes": self.num_classes,
                "channel": self.channel}


@_serializable
class PatientRegionDice(_PatientDice):
    """Per-patient mean Dice of one region, named ``patient_dice_<region>``."""


@_serializable
class PatientMeanDice(MeanRegionDice):
    """Mean over the ranked regions of their per-patient mean Dice (``patient_dice_mean``).

    Every region counts the same samples, so this is also the mean over
    patients of each patient's mean region Dice
    (:func:`shared.metrics.mean_patient_dice`).
    """

    def __init__(self, regions: dict, num_classes: int, name: str = "patient_dice_mean",
                 channels: dict | None = None, **kwargs):
        super().__init__(regions, num_classes, name=name, channels=channels, **kwargs)

    def _region_metric(self, region, members):
        return PatientRegionDice(members, f"patient_dice_{region.lower()}", self.num_classes,
                                 None if self.channels is None else self.channels[region])


def _ranked(challenge: Challenge) -> dict:
    regions = challenge.region_classes()
    return {r: regions[r] for r in ranked_regions(challenge)}


def training_metrics(challenge: Challenge) -> list:
    """Metrics for ``model.compile``: the challenge's region Dice, their mean, each label's Dice, accuracy.

    ``dice_mean`` averages the regions the challenge ranks by (WT, TC and ET
    where it has them; otherwise all of its regions).
    """
    regions = challenge.region_classes()
    ranked = _ranked(challenge)
    k = challenge.num_classes
    labels_only = [(key, (cls,)) for cls, key in enumerate(challenge.class_keys[1:], start=1)
                   if key not in regions]
    return [
        *(RegionDice(m, name=f"dice_{r.lower()}", num_classes=k) for r, m in regions.items()),
        MeanRegionDice(ranked, num_classes=k),
        PatientMeanDice(ranked, num_classes=k),
        *(RegionDice(m, name=f"dice_{key.lower()}", num_classes=k) for key, m in labels_only),
        keras.metrics.CategoricalAccuracy(name="accuracy"),
    ]


def region_training_metrics(challenge: Challenge) -> list:
    """Metrics of a region model (sigmoid outputs, shared/regions.py): each region's Dice and ``dice_mean``.

    Named as a class model's (``dice_wt``...), so checkpoints and logs read
    the same; no per-label Dice or accuracy, which would need the decoded
    labels.
    """
    regions = challenge.region_classes()
    channels = {r: i for i, r in enumerate(regions)}
    ranked = _ranked(challenge)
    k = challenge.num_classes
    return [
        *(SigmoidRegionDice(m, channels[r], name=f"dice_{r.lower()}", num_classes=k) for r, m in regions.items()),
        MeanRegionDice(ranked, num_classes=k, channels={r: channels[r] for r in ranked}),
        PatientMeanDice(ranked, num_classes=k, channels={r: channels[r] for r in ranked}),
    ]
