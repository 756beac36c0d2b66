"""Challenge detection never guesses (issue 21): every registry entry by its names, GLI 2023/2024 by labels."""

import pytest

from shared import challenges, detection, layouts

SAME_NAMES = ({"brats2023_gli", "brats2024_gli"}, {"brats2024_met", "brats2025_met"})


def _names(name: str) -> list[str]:
    entry = challenges.get(name)
    layout = layouts.get_layout(name)
    pid = entry.patient_id(7)
    return [layout.expected_name(pid, ch) for ch in layout.tokens]


@pytest.mark.parametrize("name", list(challenges.CHALLENGES))
def test_every_entry_is_identified_by_its_names(name):
    found = detection.by_names(_names(name))
    assert found.how == "names"
    twins = next((group for group in SAME_NAMES if name in group), {name})
    assert set(found.candidates) == twins, (name, found)


def test_ped_men_menrt_met_ssa_goat_are_told_apart():
    for name in ("brats2024_ped", "brats2023_men", "brats2024_men_rt", "brats2024_ssa", "brats2024_goat"):
        assert detection.by_names(_names(name)).decided == name


def test_gli_2023_vs_2024_decided_by_labels():
    names = _names("brats2023_gli")
    candidates = detection.by_names(names).candidates
    assert detection.by_labels(candidates, [0, 1, 2, 3]).decided == "brats2023_gli"
    assert detection.by_labels(candidates, [0, 1, 2, 3, 4]).decided == "brats2024_gli"
    assert detection.by_labels(candidates, [0, 4]).decided == "brats2024_gli"
    assert detection.by_labels(candidates, [0, 7]).candidates == ()


def test_hand_renamed_files_match_only_by_endings_and_ambiguity_names_the_flag():
    found = detection.by_names(["case-t2f.nii.gz", "case-t1n.nii.gz", "case-t1c.nii.gz", "case-t2w.nii.gz"])
    assert found.how == "endings" and "brats2024_ped" in found.candidates
    message = detection.ambiguity(["brats2023_gli", "brats2024_gli"], "pass --challenge")
    assert "1 NETC, 2 SNFH, 3 ET" in message and "4 RC" in message and "--challenge" in message
