"""The hard profile (synthetic/hard.py): varied heads, multi-focal tumours, harder contrasts, any challenge."""

import numpy as np
import pytest
from scipy import ndimage

from synthetic import cohort, hard

SHAPE = (64, 64, 48)


def _patient(index, grade="HGG", challenge=cohort.DEFAULT_CHALLENGE, hard_on=True):
    return cohort.make_patient(cohort.patient_id_for(index, challenge), index, SHAPE, grade, seed=3,
                               challenge=challenge, hard=hard_on)


def test_hard_is_deterministic_and_differs_from_default():
    first, again, easy = _patient(2), _patient(2), _patient(2, hard_on=False)
    for m in first.images:
        assert np.array_equal(first.images[m], again.images[m])
    assert not np.array_equal(first.seg, easy.seg)


def test_a_third_of_patients_are_multifocal_and_heads_vary():
    profiles = [hard.draw_profile(hard.hard_rng(0, i), cohort.MODALITIES, SHAPE) for i in range(1, 61)]
    share = np.mean([p.multifocal for p in profiles])
    assert 0.2 < share < 0.5
    assert any(any(v > 0 for v in p.overlap.values()) for p in profiles)
    centres = [ndimage.center_of_mass(_patient(i).brain_mask) for i in (1, 2, 3)]
    assert np.ptp(np.array(centres), axis=0).max() > 0.5  # the affine moves the head between patients


def test_multifocal_patient_has_two_tumours():
    index = next(i for i in range(1, 40) if hard.draw_profile(hard.hard_rng(3, i), cohort.MODALITIES, SHAPE).multifocal)
    patient = _patient(index)
    cores = ndimage.label(np.isin(patient.seg, (1, 4)))[1]
    assert cores >= 2


def test_bias_is_stronger_and_tumour_inside_brain():
    patient, easy = _patient(1), _patient(1, hard_on=False)
    brain = patient.brain_mask
    spread = np.log(patient.bias_fields["t1"][brain]).std()
    assert spread > 1.3 * np.log(easy.bias_fields["t1"][easy.brain_mask]).std()
    assert np.all(brain[patient.seg > 0])
    assert np.all(patient.images["flair"][~brain] == 0) and np.all(patient.images["flair"][brain] >= 1)


@pytest.mark.parametrize("challenge", ["brats2023_gli", "brats2024_gli"])
def test_hard_profile_keeps_the_challenges_numbering(challenge):
    patient = _patient(1, challenge=challenge)
    values = {label.value for label in cohort.challenges.get(challenge).labels}
    assert set(np.unique(patient.seg).tolist()) - {0} <= values
    assert 3 in np.unique(patient.seg)  # ET is label 3 in the 2023+ numbering
