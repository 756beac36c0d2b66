"""Commands say which flag to pass when files belong to another challenge (issue 21): never a guess."""

import pytest

from preprocessing import discovery, patient
from shared import layouts
from synthetic import cohort as synthetic_data


def test_folders_named_for_another_challenge_name_the_config_to_pass(tmp_path):
    synthetic_data.write_cohort(str(tmp_path), 1, shape=(32, 32, 32), seed=1, challenge="brats2024_ped")
    with pytest.raises(FileNotFoundError, match=r"named as brats2024_ped: pass "
                                                r"--config=configs/preprocess/challenge.py:brats2024_ped"):
        discovery.discover(str(tmp_path), layouts.get_layout("brats2020"), layouts.MODALITIES)


def test_a_gli_2024_case_preprocessed_as_2023_names_the_2024_config(tmp_path):
    synthetic_data.write_cohort(str(tmp_path), 1, shape=(32, 32, 32), seed=1, challenge="brats2024_gli")
    layout = layouts.get_layout("brats2023_gli")
    cohort = discovery.discover(str(tmp_path), layout, layouts.MODALITIES)  # the names fit 2023 too
    loaded = patient.load(cohort.patients[0])
    with pytest.raises(patient.PatientError, match=r"\[4\].*BraTS 2024/2025 GLI.*4 RC.*challenge.py:brats2024_gli"):
        patient.validate(loaded, layout.label_convention)
