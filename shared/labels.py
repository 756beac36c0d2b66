"""Label conventions of the BraTS releases and the tumour regions scored on them.

The model always sees four contiguous classes (background, necrotic core,
oedema, enhancing tumour).  BraTS 2020/2021 store enhancing tumour as label 4,
BraTS 2023 as label 3; a *label convention* maps the stored values onto the
training classes and back, so predictions can be written in the source's own
numbering.

Regions are ordered [WT, TC, ET] (the nnU-Net order) everywhere in the project.
"""

from __future__ import annotations

import numpy as np

BACKGROUND, NECROTIC_CORE, EDEMA, ENHANCING = 0, 1, 2, 3
NUM_CLASSES = 4
CLASS_NAMES = ("background", "necrotic_core", "edema", "enhancing")

# Stored label value -> training class, per convention.
LABEL_CONVENTIONS: dict[str, dict[int, int]] = {
    "brats2020": {0: BACKGROUND, 1: NECROTIC_CORE, 2: EDEMA, 4: ENHANCING},
    "brats2023": {0: BACKGROUND, 1: NECROTIC_CORE, 2: EDEMA, 3: ENHANCING},
}

# Training classes making up each evaluated region, in the project's order.
REGIONS: dict[str, tuple[int, ...]] = {
    "WT": (NECROTIC_CORE, EDEMA, ENHANCING),
    "TC": (NECROTIC_CORE, ENHANCING),
    "ET": (ENHANCING,),
}
REGION_NAMES = tuple(REGIONS)


def _convention(name: str) -> dict[int, int]:
    try:
        return LABEL_CONVENTIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown label convention {name!r}; known: {sorted(LABEL_CONVENTIONS)}"
        ) from None


def unexpected_labels(seg: np.ndarray, convention: str) -> list[int]:
    """Stored values in ``seg`` that the convention does not define (sorted)."""
    present = np.unique(seg)
    known = set(_convention(convention))
    return [int(v) for v in present if int(v) != v or int(v) not in known]


def to_classes(seg: np.ndarray, convention: str) -> np.ndarray:
    """Map stored labels to contiguous training classes (uint8).

    Raises ValueError naming the unexpected values, because silently mapping
    them to background would teach the model wrong anatomy.
    """
    bad = unexpected_labels(seg, convention)
    if bad:
        raise ValueError(f"unexpected label values {bad} for convention {convention!r}")
    lut = np.zeros(max(_convention(convention)) + 1, dtype=np.uint8)
    for stored, cls in _convention(convention).items():
        lut[stored] = cls
    return lut[np.asarray(seg).astype(np.int64)]


def to_source(classes: np.ndarray, convention: str) -> np.ndarray:
    """Inverse of :func:`to_classes`: training classes back to stored labels."""
    lut = np.zeros(NUM_CLASSES, dtype=np.uint8)
    for stored, cls in _convention(convention).items():
        lut[cls] = stored
    return lut[np.asarray(classes).astype(np.int64)]


def one_hot(classes: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Channels-last one-hot encoding as uint8 (1 byte per class, not float)."""
    classes = np.asarray(classes)
    if classes.size and int(classes.max()) >= num_classes:
        raise ValueError(f"class {int(classes.max())} >= num_classes {num_classes}")
    return (classes[..., None] == np.arange(num_classes, dtype=classes.dtype)).astype(np.uint8)


def region_masks(classes: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean mask per region (WT, TC, ET) from a class volume."""
    return {name: np.isin(classes, members) for name, members in REGIONS.items()}
