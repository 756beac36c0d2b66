"""Which challenge a patient's files come from: by their names, then by the labels present; never a guess.

Why a module of its own: the app, prediction and evaluation must agree on
this, and guessing is how a paediatric scan was once segmented and written in
GLI numbering without a word (issue 21).  Each registry entry's naming
(``shared.challenges``) identifies it: PED, MEN, MEN-RT, MET, SSA and GoAT
name their folders and files apart.  GLI 2023 and GLI 2024 (and MET
2024/2025) name files alike; there the labels of a segmentation decide (label
4, the resection cavity, exists only in the later numbering), and without a
segmentation the caller must ask the user (the app) or say which flag to
pass (commands).
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from typing import Iterable, Sequence

from shared import challenges, layouts


@dataclasses.dataclass(frozen=True)
class Detection:
    """The challenges a patient's files may belong to, and how that was decided."""

    candidates: tuple[str, ...]  # registry names, registry order
    how: str  # "names" (their patient ids), "endings" (only the modality tokens), "labels"

    @property
    def decided(self) -> str | None:
        """The one challenge, or None while several (or none) remain."""
        return self.candidates[0] if len(self.candidates) == 1 else None

    def describe(self) -> str:
        titles = " or ".join(challenges.get(n).title for n in self.candidates) or "no BraTS challenge"
        return {"names": f"named as {titles}", "endings": f"named only by modality endings (could be {titles})",
                "labels": f"{titles} (decided by the segmentation's labels)"}[self.how]


def _stem(name: str, layout: layouts.Layout) -> str | None:
    """The patient id in front of a layout's channel token, or None if the name ends otherwise."""
    lower = name.lower()
    for channel in layout.tokens:
        for suffix in layout.suffixes(channel):
            if lower.endswith(suffix):
                return name[: -len(suffix)]
    return None


def by_names(names: Iterable[str]) -> Detection:
    """The challenges whose naming every NIfTI file follows (patient id pattern and token).

    Files renamed by hand (``case_flair.nii.gz``) match no id pattern; then the
    challenges whose modality endings fit are the candidates, ``how="endings"``.
    """
    names = [posixpath.basename(n) for n in names if n.lower().endswith(layouts.NIFTI_EXTENSIONS)]
    by_id, by_ending = [], []
    for layout in layouts.LAYOUTS.values():
        stems = [_stem(n, layout) for n in names]
        if names and all(s is not None for s in stems):
            by_ending.append(layout.name)
            if all(re.fullmatch(layout.patient_dir, s) for s in stems):  # type: ignore[arg-type]
                by_id.append(layout.name)
    return Detection(tuple(by_id), "names") if by_id else Detection(tuple(by_ending), "endings")


def by_labels(candidates: Sequence[str], values: Iterable[int]) -> Detection:
    """Among ``candidates``, those whose numbering defines every label present, with the fewest labels.

    GLI 2023 vs 2024: a segmentation with label 4 (resection cavity) is 2024;
    one with only 1-3 is 2023.  Values none defines leave no candidate.
    """
    present = {int(v) for v in values if int(v) != 0}
    fits = [n for n in candidates if present <= set(challenges.get(n).label_values)]
    if fits:
        fewest = min(len(challenges.get(n).labels) for n in fits)
        fits = [n for n in fits if len(challenges.get(n).labels) == fewest]
    return Detection(tuple(fits), "labels")


def numbering(name: str) -> str:
    """'1 NETC, 2 SNFH, 3 ET' for a message naming a challenge's label numbering."""
    return ", ".join(f"{label.value} {label.key}" for label in challenges.get(name).labels)


def ambiguity(candidates: Sequence[str], flag: str) -> str:
    """The sentence telling the user their files fit several challenges and how to choose."""
    listed = " and ".join(f"{challenges.get(n).title} ({numbering(n)})" for n in candidates)
    return (f"These files are named as {listed} alike, and no segmentation was given to tell them apart by "
            f"its labels; {flag}.")
