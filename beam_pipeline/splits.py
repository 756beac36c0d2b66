"""Patient-level train/validation split and optional k-fold assignment.

Assigned in the launcher from the discovered patients, before any processing,
so a patient failing later never moves another patient to another split.
"""

from __future__ import annotations

import collections
import dataclasses

from sklearn.model_selection import KFold, StratifiedKFold, train_test_split


@dataclasses.dataclass
class SplitPlan:
    assignment: dict[str, str]  # patient -> "train" | "val"
    folds: dict[str, int]  # training patient -> fold (empty without k-fold)
    stratified: bool


def _can_stratify(grades: list[str], groups: int) -> bool:
    counts = collections.Counter(grades)
    return len(counts) > 1 and min(counts.values()) >= max(groups, 2)


def split_patients(grades: dict[str, str], val_fraction: float, seed: int, num_folds: int = 0) -> SplitPlan:
    """Stratified by grade where every grade has enough patients, else plain random."""
    ids = sorted(grades)
    if not ids:
        return SplitPlan({}, {}, False)
    y = [grades[i] for i in ids]
    n_val = round(len(ids) * val_fraction)
    if n_val == 0 or val_fraction <= 0:
        train, val, stratified = ids, [], False
    elif n_val >= len(ids):
        raise ValueError(f"val_fraction {val_fraction} leaves no training patient out of {len(ids)}")
    else:
        stratified = _can_stratify(y, 2) and n_val >= len(set(y)) and len(ids) - n_val >= len(set(y))
        train, val = train_test_split(ids, test_size=n_val, random_state=seed, stratify=y if stratified else None)
    assignment = {p: "train" for p in train} | {p: "val" for p in val}
    return SplitPlan(assignment=dict(sorted(assignment.items())), folds=assign_folds(sorted(train), grades, num_folds, seed),
                     stratified=stratified)


def assign_folds(train: list[str], grades: dict[str, str], num_folds: int, seed: int) -> dict[str, int]:
    """Fold index per training patient for k-fold cross-validation (0 folds: none)."""
    if num_folds <= 1:
        return {}
    if len(train) < num_folds:
        raise ValueError(f"{num_folds} folds need at least {num_folds} training patients, have {len(train)}")
    y = [grades[p] for p in train]
    if _can_stratify(y, num_folds):
        folds = StratifiedKFold(num_folds, shuffle=True, random_state=seed).split(train, y)
    else:
        folds = KFold(num_folds, shuffle=True, random_state=seed).split(train)
    out = {}
    for k, (_, held_out) in enumerate(folds):
        for index in held_out:
            out[train[index]] = k
    return dict(sorted(out.items()))
