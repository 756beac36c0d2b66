"""N4 removes a known bias field (the synthetic cohort stores the true one)."""

import numpy as np

from preprocessing import n4
from synthetic import anatomy, cohort as synthetic_data
from shared import volume_ops


def _log_corr(a, b, mask):
    return float(np.corrcoef(np.log(a[mask]), np.log(b[mask]))[0, 1])


def test_n4_recovers_the_true_bias_field_and_flattens_white_matter():
    patient = synthetic_data.make_patient("BraTS20_Training_001", 1, shape=(64, 64, 56), seed=5)
    brain = volume_ops.nonzero_brain_mask(list(patient.images.values()))
    params = n4.N4Params(shrink_factor=2, iterations=(20, 20, 20), tolerance=1e-4, spline_mesh=1)
    wm = (patient.tissues == anatomy.WM) & brain
    for modality in ("t1", "flair"):
        image = patient.images[modality].astype(np.float32)
        corrected, field = n4.correct(image, brain, (1.0, 1.0, 1.0), params)
        assert _log_corr(field, patient.bias_fields[modality], brain) > 0.8, modality
        cv_before = image[wm].std() / image[wm].mean()
        cv_after = corrected[wm].std() / corrected[wm].mean()
        assert cv_after < 0.8 * cv_before, (modality, cv_before, cv_after)
        assert (corrected[~brain] == 0).all()


def test_n4_refuses_a_blank_modality():
    brain = np.zeros((32, 32, 32), bool)
    brain[8:24, 8:24, 8:24] = True
    try:
        n4.estimate_bias(np.zeros(brain.shape, np.float32), brain, (1, 1, 1), n4.N4Params())
    except ValueError as exc:
        assert "too few for N4" in str(exc)
    else:
        raise AssertionError("N4 accepted a blank volume")


def test_channels_on_all_cores_give_the_same_bytes_and_name_the_bad_channel():
    patient = synthetic_data.make_patient("BraTS20_Training_001", 1, shape=(48, 48, 40), seed=7)
    volumes = [patient.images[m].astype(np.float32) for m in synthetic_data.MODALITIES]
    brain = volume_ops.nonzero_brain_mask(volumes)
    params = n4.N4Params(shrink_factor=2, iterations=(10, 10), tolerance=1e-3, spline_mesh=1)
    one = n4.correct_channels(volumes, brain, (1.0, 1.0, 1.0), params, threads=1)
    many = n4.correct_channels(volumes, brain, (1.0, 1.0, 1.0), params, threads=2)  # worker processes
    assert len(many) == 4 and all(a.tobytes() == b.tobytes() for a, b in zip(one, many))
    volumes[2] = np.zeros_like(volumes[2])
    for threads in (1, 2):
        try:
            n4.correct_channels(volumes, brain, (1.0, 1.0, 1.0), params, threads=threads)
        except n4.ChannelError as exc:
            assert exc.index == 2 and "too few for N4" in exc.reason
        else:
            raise AssertionError("a blank channel was corrected")
