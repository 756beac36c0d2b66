"""Lesions as connected parts of a mask: clusters, components, dilation merging, cross-tissue joining.

The geometry both lesion scorings stand on (:mod:`evaluation.lesionwise`,
BraTS 2023-2025, and :mod:`evaluation.matching`, BraTS 2026), apart from
what either scores: how a tumour splits into independent clusters
(:func:`clusters`), how lesions are found in a mask (26-connected
:func:`components`, :func:`merge_by_dilation`), the 2024 cross-tissue joining
(:func:`touching_pairs`, :func:`join_groups`) and the per-lesion record both
scorings produce (:func:`lesion_record`, :func:`numbered`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import ndimage

# Lesions are 26-connected components; the truth is dilated with the 18-connected
# cross (generate_binary_structure(3, 2)), as in the BraTS code.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)
DILATION_STRUCTURE = ndimage.generate_binary_structure(3, 2)


# -- clusters: independent parts of a sparse volume ------------------------------

# Coarse grid block (voxels per side) used to find the clusters.
_BLOCK = 4


def clusters(mask: np.ndarray, reach: int) -> list[tuple[tuple[slice, ...], np.ndarray]]:
    """Parts of ``mask`` that cannot interact when lesions reach ``reach`` voxels (the dilation).

    Returns (box, member) pairs: the box holds the part and ``reach + 1``
    voxels around it (clipped to the volume, so its border behaves as the
    full scan's), ``member`` marks the box voxels that belong to the part.
    Found on a 4x coarser grid, conservatively: two voxels whose dilated zones
    could touch (Chebyshev distance <= 2 * reach + 1) always share a part.  A
    scan with a tumour and distant satellites then costs the sum of a few
    small boxes instead of one box spanning the brain.
    """
    if not mask.any():
        return []
    b = _BLOCK
    padded = np.pad(mask, [(0, (-n) % b) for n in mask.shape])
    coarse = padded.reshape(padded.shape[0] // b, b, padded.shape[1] // b, b, padded.shape[2] // b, b).any(axis=(1, 3, 5))
    grow = -(-(reach + 1) // b)  # ceil((reach + 1) / b): zones grown by `grow` blocks touch when they may
    grown = ndimage.binary_dilation(coarse, CONNECTIVITY_26, iterations=grow)
    ids, _ = ndimage.label(grown, CONNECTIVITY_26)
    parts = []
    for k, coarse_box in enumerate(ndimage.find_objects(ids), 1):
        box = tuple(slice(max(c.start * b - reach - 1, 0), min(c.stop * b + reach + 1, n))
                    for c, n in zip(coarse_box, mask.shape))
        member = ids[np.ix_(*(np.arange(s.start, s.stop) // b for s in box))] == k
        parts.append((box, member))
    return parts


# -- geometry helpers ------------------------------------------------------------

def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices around the (non-empty) mask's true voxels, ``margin`` wider, clipped to the array."""
    slices = []
    for axis, size in enumerate(mask.shape):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        slices.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, size)))
    return tuple(slices)


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components: (labels 1..n, n)."""
    labels, n = ndimage.label(mask, structure=CONNECTIVITY_26)
    return labels, int(n)


def merge_by_dilation(mask: np.ndarray, dilation: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Lesions of ``mask`` after joining components whose dilations meet.

    Returns (lesion ids on the mask's voxels, zone ids, n).  The zone of a
    lesion is the lesion dilated ``dilation`` times: dilation distributes over
    union, so the components of the dilated mask are exactly the dilated
    lesions, and one dilation of the whole mask replaces one per lesion.
    """
    if dilation <= 0:
        ids, n = components(mask)
        return ids, ids, n
    zones, n = components(ndimage.binary_dilation(mask, structure=DILATION_STRUCTURE, iterations=dilation))
    return np.where(mask, zones, 0), zones, n


def overlap_pairs(a_ids: np.ndarray, b_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (a, b) id pairs that share a voxel (both non-zero), with the shared voxel counts."""
    both = (a_ids > 0) & (b_ids > 0)
    a, b = a_ids[both].astype(np.int64), b_ids[both].astype(np.int64)
    if a.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    base = int(b.max()) + 1
    unique, counts = np.unique(a * base + b, return_counts=True)
    return unique // base, unique % base, counts


def union_box(boxes: Sequence[tuple[slice, ...]]) -> tuple[slice, ...]:
    return tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes)) for d in range(len(boxes[0])))


def class_table(classes: tuple[int, ...], num_classes: int) -> np.ndarray:
    """Class -> in-region table: one gather instead of np.isin per region."""
    table = np.zeros(max(num_classes, 256), dtype=bool)
    table[list(classes)] = True
    return table


# -- the 2024 cross-tissue joining -----------------------------------------------

# The 18 neighbours of a voxel: what one dilation with generate_binary_structure(3, 2) reaches.
_OFFSETS_18 = np.array([o for o in np.ndindex(3, 3, 3) if 1 <= sum(abs(c - 1) for c in o) <= 2]) - 1


@dataclasses.dataclass
class Tissue:
    """One tissue's lesions in one cluster: ids on its voxels (0 elsewhere) inside ``box``
    (cluster coordinates), the dilated zones (truth only) and the number of ids."""

    box: tuple[slice, ...]
    ids: np.ndarray
    zones: np.ndarray | None
    n: int


def touching_pairs(a: Tissue, b: Tissue) -> np.ndarray:
    """Distinct (a id, b id) pairs with an a voxel and a b voxel 18-neighbours of each other
    (the reference's ``get_touching_labels``: one dilation of either by the 18-connected cross)."""
    lo = [max(sa.start, sb.start - 1) for sa, sb in zip(a.box, b.box)]
    hi = [min(sa.stop, sb.stop + 1) for sa, sb in zip(a.box, b.box)]
    if any(low >= high for low, high in zip(lo, hi)):
        return np.zeros((0, 2), dtype=np.int64)
    a_win = a.ids[tuple(slice(low - sa.start, high - sa.start) for low, high, sa in zip(lo, hi, a.box))]
    b_win = np.zeros(tuple(high - low + 2 for low, high in zip(lo, hi)), dtype=b.ids.dtype)  # one voxel wider
    src = tuple(slice(max(low - 1, sb.start), min(high + 1, sb.stop)) for low, high, sb in zip(lo, hi, b.box))
    b_win[tuple(slice(s.start - low + 1, s.stop - low + 1) for s, low in zip(src, lo))] = \
        b.ids[tuple(slice(s.start - sb.start, s.stop - sb.start) for s, sb in zip(src, b.box))]
    near = ndimage.binary_dilation(b_win > 0, DILATION_STRUCTURE)[1:-1, 1:-1, 1:-1] & (a_win > 0)
    where = np.nonzero(near)
    if where[0].size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    a_of = a_win[where].astype(np.int64)
    found = []
    for offset in _OFFSETS_18:
        b_of = b_win[tuple(w + 1 + o for w, o in zip(where, offset))].astype(np.int64)
        keep = b_of > 0
        found.append(np.stack([a_of[keep], b_of[keep]], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def join_groups(n: int, partner_pairs: Sequence[np.ndarray]) -> np.ndarray:
    """Group of each lesion 1..n (index 0 stays 0) after the reference's ``relabel_nifti_image``
    for each partner tissue in turn: every group that touches the partner takes the partner's
    lowest touching id as its key, and groups with the same key become one.  Groups are
    numbered 1.. in the order of their lowest member."""
    group = np.arange(n + 1)
    for pairs in partner_pairs:
        if len(pairs) == 0:
            continue
        key: dict[int, int] = {}
        for g, partner in zip(group[pairs[:, 0]].tolist(), pairs[:, 1].tolist()):
            key[g] = min(key.get(g, partner), partner)
        first: dict[int, int] = {}
        for g in sorted(key):
            first.setdefault(key[g], g)
        remap = np.arange(n + 1)
        for g, k in key.items():
            remap[g] = first[k]
        group = remap[group]
    _, numbered = np.unique(group, return_inverse=True)
    return numbered.reshape(-1)


# -- lesion records --------------------------------------------------------------

def lesion_record(kind: str, volume_mm3: float, counted: bool, matched: bool,
            dice: float, hd95: float, nsd: float = float("nan"), **extra) -> dict:
    return {"lesion": 0, "kind": kind, "volume_mm3": volume_mm3, "counted": counted,
            "matched": matched, "dice": dice, "hd95": hd95, "nsd": nsd, **extra}


def numbered(records: list[dict]) -> list[dict]:
    """True lesions 1..n then false positives 1..m, in the order found."""
    count = {"truth": 0, "false_positive": 0}
    for record in records:
        count[record["kind"]] += 1
        record["lesion"] = count[record["kind"]]
    return sorted(records, key=lambda r: r["kind"] != "truth")
