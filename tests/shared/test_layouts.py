"""File naming of each BraTS release preset."""

import pytest

from shared import layouts

CHANNELS = ("flair", "t1", "t1ce", "t2", "seg")


@pytest.mark.parametrize(
    "layout, pid, names",
    [
        ("brats2020", "BraTS20_Training_001",
         ["BraTS20_Training_001_flair.nii", "BraTS20_Training_001_t1.nii", "BraTS20_Training_001_t1ce.nii",
          "BraTS20_Training_001_t2.nii", "BraTS20_Training_001_seg.nii"]),
        ("brats2021", "BraTS2021_00000",
         ["BraTS2021_00000_flair.nii.gz", "BraTS2021_00000_t1.nii.gz", "BraTS2021_00000_t1ce.nii.gz",
          "BraTS2021_00000_t2.nii.gz", "BraTS2021_00000_seg.nii.gz"]),
        ("brats2023_gli", "BraTS-GLI-00000-000",
         ["BraTS-GLI-00000-000-t2f.nii.gz", "BraTS-GLI-00000-000-t1n.nii.gz", "BraTS-GLI-00000-000-t1c.nii.gz",
          "BraTS-GLI-00000-000-t2w.nii.gz", "BraTS-GLI-00000-000-seg.nii.gz"]),
    ],
)
def test_each_preset_finds_its_files(layout, pid, names):
    preset = layouts.get_layout(layout)
    assert preset.is_patient_dir(pid)
    paths = [f"/data/{pid}/{n}" for n in names] + [f"/data/{pid}/notes.txt"]
    match = layouts.match_patient_files(preset, pid, paths, CHANNELS)
    assert match.complete
    assert [match.paths[c].rsplit("/", 1)[1] for c in CHANNELS] == names


def test_label_conventions_per_release():
    assert layouts.get_layout("brats2020").label_convention == "brats2020"
    assert layouts.get_layout("brats2021").label_convention == "brats2020"
    assert layouts.get_layout("brats2023_gli").label_convention == "brats2023"


def test_folders_of_other_releases_are_not_patients():
    assert not layouts.get_layout("brats2020").is_patient_dir("BraTS2021_00000")
    assert not layouts.get_layout("brats2020").is_patient_dir("bias_fields")
    assert layouts.get_layout("brats2020").is_patient_dir("BraTS20_Validation_012")


def test_misnamed_segmentation_of_case_355_gets_a_rename_hint():
    pid = "BraTS20_Training_355"
    names = [f"{pid}_{m}.nii" for m in ("flair", "t1", "t1ce", "t2")] + ["W39_1998.09.19_Segm.nii"]
    match = layouts.match_patient_files(layouts.get_layout("brats2020"), pid, names, CHANNELS)
    assert set(match.missing) == {"seg"}
    assert "W39_1998.09.19_Segm.nii" in match.missing["seg"]
    assert f"rename it to {pid}_seg.nii" in match.missing["seg"]


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="brats2020"):
        layouts.get_layout("brats2019")
