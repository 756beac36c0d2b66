"""benchmarks/tumour_errors.py: the per-patient error summary BUILD_NOTES quotes for the hard cohort."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from shared import challenges
from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("tumour_errors", ROOT / "benchmarks" / "tumour_errors.py")
tumour_errors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tumour_errors)


def test_errors_name_the_missed_core_the_false_positive_and_what_filling_recovers():
    truth = np.zeros((30, 30, 30), np.uint8)  # brats2020 classes: 1 NCR, 2 ED, 3 ET
    truth[4:20, 4:20, 4:20] = 2
    truth[6:18, 6:18, 6:18] = 3
    truth[8:16, 8:16, 8:16] = 1
    pred = truth.copy()
    pred[8:16, 8:16, 8:16] = 2  # the necrosis inside the rim called oedema
    pred[24:27, 24:27, 24:27] = 2  # a 27-voxel false positive
    out = tumour_errors.patient_errors(truth, pred, challenges.get("brats2020"))
    assert out["truth_wt_components"] == [16 ** 3]
    assert out["pred_wt_components"] == [{"voxels": 16 ** 3, "truth_voxels": 16 ** 3},
                                         {"voxels": 27, "truth_voxels": 0}]
    assert out["missed_core_as"] == {"ED": 8 ** 3}
    assert out["tc_dice"] < 1.0 and out["tc_dice_core_filled"] == 1.0
    assert tumour_errors.patient_errors(truth, None, challenges.get("brats2020")) == {"truth_wt_components": [4096]}


def test_core_contrast_measures_the_core_against_the_oedema_in_oedema_deviations():
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[2:18, 2:18, 2:18] = 2
    truth[6:14, 6:14, 6:14] = 1  # a core without enhancing tumour (a low-grade glioma's)
    rng = np.random.default_rng(0)
    oedema_like = rng.normal(100.0, 10.0, truth.shape)
    darker = oedema_like - 25.0 * (truth == 1)
    out = tumour_errors.patient_errors(truth, None, challenges.get("brats2020"),
                                       {"flair": oedema_like, "t1": darker})
    assert out["et_share_of_tc"] == 0.0
    assert abs(out["core_contrast"]["flair"]) < 0.2  # nothing tells this core from oedema
    assert out["core_contrast"]["t1"] == pytest.approx(-2.5, abs=0.2)
