"""What the network is trained to output: the challenge's classes or its regions.

``target="classes"`` (the default): a softmax over the challenge's classes,
Dice + CE.  ``target="regions"``: one sigmoid per scored region (WT, TC, ET
for glioma), Dice + BCE, as nnU-Net trains BraTS; prediction turns the region
probabilities back into labels by :mod:`shared.regions`' innermost-wins rule.
Either way the records and the data pipeline are the same (one-hot classes):
the region loss and metrics map the classes to regions themselves.

Keras ops only, no TensorFlow: ``benchmarks/bench_train.py`` builds its
models through here under the JAX backend too.
"""

from __future__ import annotations

import keras

from shared import regions as regions_lib
from shared.challenges import Challenge
from trainer import losses, metrics, model as model_lib

TARGETS = ("classes", "regions")


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {list(TARGETS)}")


def decoding(target: str, challenge: Challenge) -> regions_lib.RegionDecoding | None:
    """The region decoding of a region target (ValueError if the challenge cannot use one), else None."""
    check_target(target)
    return regions_lib.decoding(challenge) if target == "regions" else None


def model_spec(spec: model_lib.UNetSpec, target: str, challenge: Challenge) -> model_lib.UNetSpec:
    """``spec`` with the head and output count of the target: one per class, or one per region."""
    import dataclasses

    found = decoding(target, challenge)
    if found is None:
        return dataclasses.replace(spec, num_classes=challenge.num_classes, head="softmax")
    return dataclasses.replace(spec, num_classes=len(found.names), head="sigmoid")


def training_loss(loss_name: str, target: str, challenge: Challenge, region_weights=()):
    """The config's loss (ce | dice | dice_ce) for the target: CE is categorical for classes, binary for regions
    (each region counted as ``region_weights`` say, in the order of the challenge's regions; equal when empty)."""
    found = decoding(target, challenge)
    if found is None:
        if region_weights:
            raise ValueError("region_weights weigh the regions of target='regions'; this run trains classes")
        return losses.get_loss(loss_name)
    return losses.region_loss(loss_name, found.membership().tolist(), weights=list(region_weights) or None)


def training_metrics(target: str, challenge: Challenge) -> list:
    """Region Dice (``dice_wt``..., ``dice_mean``) from argmax (classes) or from each sigmoid > 0.5 (regions)."""
    if decoding(target, challenge) is None:
        return metrics.training_metrics(challenge)
    return metrics.region_training_metrics(challenge)


def compiled_model(input_shape, spec: model_lib.UNetSpec, target: str, challenge: Challenge, loss_name: str,
                   optimizer, deep_supervision: bool = False, jit_compile=False,
                   with_metrics: bool = True, region_weights=()) -> keras.Model:
    """The U-Net for ``target``, compiled; deep supervision wraps it in :class:`trainer.model.DeepSupervision`.

    ``spec`` must already be :func:`model_spec`'s.  The model's ``save`` writes
    the one-output serving model either way.  ``with_metrics=False``: the
    step alone (benchmarks).
    """
    loss = training_loss(loss_name, target, challenge, region_weights)
    check_deep_supervision(spec, deep_supervision)
    if deep_supervision:
        net = model_lib.DeepSupervision(model_lib.build_unet(input_shape, spec, deep_supervision=True), loss)
        loss = None  # DeepSupervision.compute_loss applies it to every output
    else:
        net = model_lib.build_unet(input_shape, spec)
    net.compile(optimizer=optimizer, loss=loss, metrics=training_metrics(target, challenge) if with_metrics else None,
                jit_compile=jit_compile)
    return net


def check_deep_supervision(spec: model_lib.UNetSpec, deep_supervision: bool) -> None:
    """Deep supervision needs a decoder level below full resolution to put an auxiliary head on."""
    if deep_supervision and not model_lib.supervised_levels(spec.depth):
        raise ValueError(f"deep supervision needs a U-Net of depth >= 3 (a decoder level below full "
                         f"resolution), got depth {spec.depth}")


def model_target(net) -> str:
    """"regions" or "classes": what a saved model outputs, from its output layer's name (trainer/model.py)."""
    name = net.outputs[0]._keras_history[0].name if getattr(net, "outputs", None) else ""
    return "regions" if name.endswith(model_lib.OUTPUT_NAMES["sigmoid"]) else "classes"
