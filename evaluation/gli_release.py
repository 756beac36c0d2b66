"""GLI 2023 or GLI 2024? Decided from the labels of the ground truth, since the file names are the same.

BraTS GLI 2023 (pre-treatment) and GLI 2024/2025 (post-treatment) name their
patients and files alike (``BraTS-GLI-NNNNN-NNN-seg.nii.gz``), so a cohort
found without ``--challenge`` is first read as GLI 2023.  Label 4 settles it:
GLI 2023 has labels 0-3; GLI 2024 adds 4, the resection cavity (the rule is
:func:`shared.detection.by_labels`, which the app and prediction use too;
this module only turns it into evaluation's re-scoring and messages).  A truth with
label 4 read as GLI 2023 raises :class:`ReleaseMismatch`, which
:func:`evaluation.scoring.score_folders` answers by scoring the cohort again as
GLI 2024 when the challenge was only guessed, or by a failure that names
``--challenge=brats2024_gli`` when it was given.  A GLI 2024 cohort with no
resection cavity anywhere is indistinguishable from GLI 2023: it is scored as
GLI 2023 (regions WT, TC, ET; the same numbers for those three) and the report
says which was assumed and the flag that changes it.
"""

from __future__ import annotations

import numpy as np

from shared import detection

# The layout a cohort is first read as -> the one with the same names whose labels go further.
SIBLINGS = {"brats2023_gli": "brats2024_gli"}
RESECTION_CAVITY = 4


class ReleaseMismatch(ValueError):
    """A truth file's labels belong to the sibling release (GLI 2024's label 4 read as GLI 2023)."""

    def __init__(self, name: str, layout_name: str, sibling: str):
        self.sibling = sibling
        super().__init__(f"{name}: label {RESECTION_CAVITY} (resection cavity) means BraTS GLI 2024, not "
                         f"{layout_name}: pass --challenge={sibling}")


def check(stored: np.ndarray, layout_name: str, name: str) -> None:
    """Raise :class:`ReleaseMismatch` when ``stored`` (a truth's label values, rounded) shows the sibling release."""
    sibling = SIBLINGS.get(layout_name)
    if sibling and detection.by_labels((layout_name, sibling), np.unique(stored)).decided == sibling:
        raise ReleaseMismatch(name, layout_name, sibling)


def assumed_note(layout_name: str, given: bool) -> str | None:
    """The report's line when the release was guessed and the labels could not tell (no label 4 seen)."""
    sibling = SIBLINGS.get(layout_name)
    if given or not sibling:
        return None
    return (f"read as {layout_name}: the names match {layout_name} and {sibling} alike and no truth has label "
            f"{RESECTION_CAVITY} (resection cavity); pass --challenge={sibling} if this is the later release")
