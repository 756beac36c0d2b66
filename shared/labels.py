"""Stored label values <-> contiguous training classes, per label convention.

A *label convention* is a challenge's numbering (:mod:`shared.challenges`):
BraTS 2020/2021 store enhancing tumour as 4, 2023 as 3, GLI 2024 adds 4 for
the resection cavity, PED 2024 numbers its own way.  Models see contiguous
classes (0 background, then the convention's labels in increasing value), and
predictions are written back in the source's own numbering.
"""

from __future__ import annotations

import numpy as np

from shared import challenges


def _values(convention: str) -> tuple[int, ...]:
    try:
        return tuple(label.value for label in challenges.CONVENTIONS[convention])
    except KeyError:
        raise ValueError(
            f"unknown label convention {convention!r}; known: {', '.join(challenges.CONVENTIONS)}"
        ) from None


def stored_values(convention: str) -> tuple[int, ...]:
    """Every value a segmentation in ``convention`` may hold, background included."""
    return (0,) + _values(convention)


def num_classes(convention: str) -> int:
    return len(_values(convention)) + 1


def class_keys(convention: str) -> tuple[str, ...]:
    """``("background", <label keys>...)`` in class order."""
    return ("background",) + tuple(label.key for label in challenges.CONVENTIONS[convention])


def unexpected_labels(seg: np.ndarray, convention: str) -> list[int]:
    """Stored values in ``seg`` that the convention does not define (sorted)."""
    present = np.unique(seg)
    known = set(stored_values(convention))
    return [int(v) if int(v) == v else float(v) for v in present if int(v) != v or int(v) not in known]


def to_classes(seg: np.ndarray, convention: str) -> np.ndarray:
    """Map stored labels to contiguous training classes (uint8).

    Raises ValueError naming the unexpected values, because silently mapping
    them to background would teach the model wrong anatomy.
    """
    bad = unexpected_labels(seg, convention)
    if bad:
        raise ValueError(f"unexpected label values {bad} for convention {convention!r}"
                         f" (it defines {list(stored_values(convention))})")
    values = stored_values(convention)
    lut = np.zeros(max(values) + 1, dtype=np.uint8)
    for cls, stored in enumerate(values):
        lut[stored] = cls
    return lut[np.asarray(seg).astype(np.int64)]


def to_source(classes: np.ndarray, convention: str) -> np.ndarray:
    """Inverse of :func:`to_classes`: training classes back to stored labels."""
    lut = np.asarray(stored_values(convention), dtype=np.uint8)
    classes = np.asarray(classes).astype(np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= lut.size):
        raise ValueError(f"class values must lie in 0..{lut.size - 1} for convention {convention!r},"
                         f" got {int(classes.min())}..{int(classes.max())}")
    return lut[classes]


def one_hot(classes: np.ndarray, num_classes: int) -> np.ndarray:
    """Channels-last one-hot encoding as uint8 (1 byte per class, not float)."""
    classes = np.asarray(classes)
    if classes.size and int(classes.max()) >= num_classes:
        raise ValueError(f"class {int(classes.max())} >= num_classes {num_classes}")
    return (classes[..., None] == np.arange(num_classes, dtype=classes.dtype)).astype(np.uint8)


def region_masks(classes: np.ndarray, challenge: challenges.Challenge) -> dict[str, np.ndarray]:
    """Boolean mask per scored region of ``challenge`` from a class volume."""
    return {name: np.isin(classes, members) for name, members in challenge.region_classes().items()}
