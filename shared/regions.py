"""Region targets: a challenge's scored regions as model outputs, and back to labels.

nnU-Net trains BraTS on the scored regions (WT, TC, ET), one sigmoid each,
instead of a softmax over the labels, because the regions are what is ranked
and they nest: a voxel of enhancing tumour is also tumour core and whole
tumour.  A region model's output channel ``i`` is the probability of the
challenge's ``i``-th region (registry order, :meth:`Challenge.region_classes`).

Back to labels (nnU-Net's rule, generalised through the registry):

* the regions are applied from the outermost to the innermost: by the number
  of classes they hold, largest first, ties in registry order;
* each region writes one class, the class of the region that the fewest
  regions contain (ties: the lowest class): the part of the region no region
  inside it claims (WT -> oedema, TC -> necrosis, ET -> enhancing);
* a voxel starts as background and every region whose probability is above
  0.5 overwrites it, so the innermost region wins.

For glioma: label = ET if p_ET > 0.5, else necrosis if p_TC > 0.5, else
oedema if p_WT > 0.5, else background.  Numpy only (no TensorFlow): serving,
evaluation and the app call it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shared.challenges import Challenge

THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class RegionDecoding:
    """How a region model's outputs map to a challenge's classes."""

    names: tuple[str, ...]  # output channel i is region names[i]
    members: tuple[tuple[int, ...], ...]  # the classes of each channel's region
    order: tuple[int, ...]  # channels applied outermost first (the last written wins)
    writes: tuple[int, ...]  # the class each channel writes
    num_classes: int

    def membership(self) -> np.ndarray:
        """``(num_classes, regions)`` 0/1 matrix: one-hot classes @ it = region masks."""
        matrix = np.zeros((self.num_classes, len(self.names)), dtype=np.float32)
        for channel, members in enumerate(self.members):
            matrix[list(members), channel] = 1.0
        return matrix

    def to_regions(self, classes: np.ndarray) -> np.ndarray:
        """Class volume ``(...)`` -> region masks ``(..., regions)`` (uint8)."""
        return self.membership().astype(np.uint8)[np.asarray(classes, dtype=np.intp)]

    def to_classes(self, probabilities: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
        """Region probabilities ``(..., regions)`` -> classes (uint8) by the innermost-wins rule."""
        probabilities = np.asarray(probabilities)
        if probabilities.shape[-1] != len(self.names):
            raise ValueError(f"{probabilities.shape[-1]} output channels, but the regions are "
                             f"{len(self.names)} ({', '.join(self.names)})")
        classes = np.zeros(probabilities.shape[:-1], dtype=np.uint8)
        for channel in self.order:
            classes[probabilities[..., channel] > threshold] = self.writes[channel]
        return classes

    def explain(self) -> str:
        """Why a region model's training Dice and its decoded evaluation differ, for the report and console.

        Training scores each sigmoid on its own; evaluation first decodes to labels, innermost region
        last, so a region written late (GLI 2024's RC) takes voxels from the regions written before it.
        """
        order = [self.names[i] for i in self.order]
        return (f"Region model: training's validation Dice scores each region's own output (p > {THRESHOLD}); "
                f"this evaluation decodes them to labels in the order {', '.join(order)} (a later region "
                f"overwrites an earlier one), so an inner region predicted over the tumour (here {order[-1]} "
                "last) lowers the outer regions' Dice: the two can disagree, most for an untrained model.")


def decoding(challenge: Challenge) -> RegionDecoding:
    """The challenge's regions as outputs; ValueError if some label could never be predicted."""
    regions = challenge.region_classes()
    if not regions:
        raise ValueError(f"{challenge.name} has no scored regions to train on")
    names = tuple(regions)
    members = tuple(tuple(sorted(regions[n])) for n in names)
    count = {c: sum(c in m for m in members) for c in range(challenge.num_classes)}
    writes = tuple(min(m, key=lambda c: (count[c], c)) for m in members)
    order = tuple(sorted(range(len(names)), key=lambda i: (-len(members[i]), i)))
    missing = sorted(set(range(1, challenge.num_classes)) - set(writes))
    if missing:
        keys = [challenge.class_keys[c] for c in missing]
        raise ValueError(f"a region model of {challenge.name} could not predict label(s) {keys}: no region "
                         f"({', '.join(names)}) writes them; train it with target=classes")
    return RegionDecoding(names, members, order, writes, challenge.num_classes)
