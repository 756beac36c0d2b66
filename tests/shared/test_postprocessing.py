"""Post-processing rules on hand-made class volumes, and their choice on validation predictions."""

from __future__ import annotations

import numpy as np
import pytest

from shared import challenges, postprocessing as post, trained_run

GLI2020 = challenges.get("brats2020")  # classes: 1 NCR, 2 ED, 3 ET
MEN_RT = challenges.get("brats2024_men_rt")  # one class: GTV
PED = challenges.get("brats2024_ped")  # classes: 1 ET, 2 NETC, 3 CC, 4 ED


def _tumour(shape=(30, 30, 30), et_voxels=0):
    """Oedema cube with a necrotic core cube, and ``et_voxels`` ET voxels in a row inside the core."""
    classes = np.zeros(shape, np.uint8)
    classes[5:20, 5:20, 5:20] = 2
    classes[8:17, 8:17, 8:17] = 1
    classes[9, 9, 9:9 + et_voxels] = 3
    return classes


def test_small_enhancing_tumour_becomes_core_and_large_stays():
    small = _tumour(et_voxels=5)
    out = post.apply(small, GLI2020, [{"rule": "et_to_core", "max_voxels": 6}])
    assert (out == 3).sum() == 0 and (out == 1).sum() == (small == 1).sum() + 5
    np.testing.assert_array_equal(out == 2, small == 2)  # oedema untouched
    assert (small == 3).sum() == 5, "the input is not modified"
    # at or above the threshold: unchanged
    np.testing.assert_array_equal(post.apply(small, GLI2020, [{"rule": "et_to_core", "max_voxels": 5}]), small)


def test_the_et_rule_uses_the_challenges_own_labels():
    # BraTS PED: ET is class 1 and the core label NETC class 2
    assert post.core_class(PED) == (1, 2)
    assert post.core_class(GLI2020) == (3, 1)
    classes = np.zeros((10, 10, 10), np.uint8)
    classes[2:6, 2:6, 2:6] = 2
    classes[3, 3, 3] = 1
    out = post.apply(classes, PED, [{"rule": "et_to_core", "max_voxels": 2}])
    assert (out == 1).sum() == 0 and out[3, 3, 3] == 2


def test_a_challenge_without_enhancing_tumour_skips_the_et_rule():
    assert post.core_class(MEN_RT) is None
    kinds = post.candidates(MEN_RT)
    assert all(rule["rule"] != "et_to_core" for kind in kinds for rule in kind)
    assert all(rule["region"] == "GTV" for rule in kinds[0])
    with pytest.raises(ValueError, match="et_to_core does not apply to brats2024_men_rt"):
        post.apply(np.zeros((4, 4, 4), np.uint8), MEN_RT, [{"rule": "et_to_core", "max_voxels": 10}])


def test_component_rules_keep_the_largest_or_drop_the_small():
    classes = _tumour(et_voxels=3)
    classes[25:27, 25:27, 25:27] = 2  # an 8-voxel island of oedema far from the tumour
    classes[0, 0, 0] = 1  # and a single voxel of core
    largest = post.apply(classes, GLI2020, [{"rule": "keep_largest", "region": "WT"}])
    np.testing.assert_array_equal(largest, _tumour(et_voxels=3))
    dropped = post.apply(classes, GLI2020, [{"rule": "drop_small", "region": "WT", "min_voxels": 5}])
    assert dropped[0, 0, 0] == 0 and (dropped[25:27, 25:27, 25:27] == 2).all()
    # a diagonal neighbour is the same component (26-connectivity)
    classes[1, 1, 1] = 1
    kept = post.apply(classes, GLI2020, [{"rule": "drop_small", "region": "WT", "min_voxels": 2}])
    assert kept[0, 0, 0] == 1 and kept[1, 1, 1] == 1


def test_unknown_or_malformed_rules_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown post-processing rule"):
        post.apply(_tumour(), GLI2020, [{"rule": "fill_holes"}])
    with pytest.raises(ValueError, match="has no region 'GTV'"):
        post.apply(_tumour(), GLI2020, [{"rule": "keep_largest", "region": "GTV"}])


def test_choose_keeps_the_et_rule_when_truths_lack_small_enhancing_tumours(tmp_path):
    # truth: no ET; predictions: a few spurious ET voxels in the core -> ET Dice 0 unless relabelled
    cases = [(_tumour(et_voxels=n), np.where(_tumour(et_voxels=n) == 3, 1, _tumour(et_voxels=n)).astype(np.uint8))
             for n in (3, 4, 6)]
    # and one patient with a real, large ET that the rule must not remove
    big = _tumour(et_voxels=8)
    big[10:15, 10:15, 10:15] = 3
    cases.append((big, big.copy()))
    choice = post.choose(cases, GLI2020, et_thresholds=(5, 10, 200), component_sizes=(5,))
    assert choice.rules == [{"rule": "et_to_core", "max_voxels": 10}]
    assert choice.mean_dice_after > choice.mean_dice_before
    post.save(str(tmp_path / trained_run.POSTPROCESSING_FILE), choice)
    assert post.load(str(tmp_path / trained_run.POSTPROCESSING_FILE), GLI2020) == choice.rules


def test_choose_keeps_nothing_that_does_not_help():
    # the truth has two separate tumours: keeping the largest component would lose one
    truth = _tumour()
    truth[24:29, 24:29, 24:29] = 2
    choice = post.choose([(truth.copy(), truth)], GLI2020, et_thresholds=(10,), component_sizes=(10,))
    assert choice.rules == [] and choice.mean_dice_after == choice.mean_dice_before == 1.0


def test_choose_removes_a_false_positive_island():
    truth = _tumour()
    pred = truth.copy()
    pred[26:28, 26:28, 26:28] = 2
    choice = post.choose([(pred, truth)], GLI2020, et_thresholds=(10,), component_sizes=(10, 100))
    assert choice.rules[0]["rule"] in ("keep_largest", "drop_small") and choice.mean_dice_after == 1.0


def test_rules_chosen_for_another_challenge_are_refused(tmp_path):
    choice = post.choose([(_tumour(), _tumour())], GLI2020)
    choice.rules = [{"rule": "et_to_core", "max_voxels": 10}]
    post.save(str(tmp_path / "p.json"), choice)
    with pytest.raises(ValueError, match="chosen for brats2020, not brats2024_men_rt"):
        post.load(str(tmp_path / "p.json"), MEN_RT)


def _ringed(inside: int, open_wall: bool = False):
    """An oedema cube around a closed shell of enhancing tumour whose inside is class ``inside``
    (``open_wall``: one face of the shell has a gap, so the inside reaches the oedema)."""
    classes = np.zeros((30, 30, 30), np.uint8)
    classes[4:26, 4:26, 4:26] = 2
    classes[8:22, 8:22, 8:22] = 3
    classes[10:20, 10:20, 10:20] = inside
    if open_wall:
        classes[8:10, 14, 14] = 2
    return classes


def test_fill_core_gives_what_the_core_encloses_to_the_core_label():
    pred = _ringed(inside=2)  # necrosis inside the enhancing rim predicted as oedema
    out = post.apply(pred, GLI2020, [{"rule": "fill_core"}])
    np.testing.assert_array_equal(out, _ringed(inside=1))
    assert (pred[10:20, 10:20, 10:20] == 2).all(), "the input is not modified"
    # an enclosed hole of background too (then the whole tumour grows by it)
    np.testing.assert_array_equal(post.apply(_ringed(inside=0), GLI2020, [{"rule": "fill_core"}]), _ringed(inside=1))
    # a rim with a gap encloses nothing
    gap = _ringed(inside=2, open_wall=True)
    np.testing.assert_array_equal(post.apply(gap, GLI2020, [{"rule": "fill_core"}]), gap)
    # PED: the core label is NETC (class 2) and ET class 1
    ped = np.where(pred == 3, 1, np.where(pred == 2, 4, pred)).astype(np.uint8)
    assert (post.apply(ped, PED, [{"rule": "fill_core"}])[10:20, 10:20, 10:20] == 2).all()


def test_choose_fills_the_core_only_where_validation_truths_say_necrosis():
    necrotic = [(_ringed(inside=2), _ringed(inside=1))]
    assert post.choose(necrotic, GLI2020, et_thresholds=(5,), component_sizes=(5,)).rules == [{"rule": "fill_core"}]
    oedema_inside = [(_ringed(inside=2), _ringed(inside=2))]
    assert post.choose(oedema_inside, GLI2020, et_thresholds=(5,), component_sizes=(5,)).rules == []


def test_fill_core_needs_a_core_label():
    assert all(rule["rule"] != "fill_core" for kind in post.candidates(MEN_RT) for rule in kind)
    with pytest.raises(ValueError, match="fill_core does not apply to brats2024_men_rt"):
        post.apply(np.zeros((4, 4, 4), np.uint8), MEN_RT, [{"rule": "fill_core"}])


def test_of_component_rules_that_tie_the_largest_drop_threshold_is_kept():
    # one true tumour and an 8-voxel speck: dropping components under 10, under 100 voxels and keeping the
    # largest all score 1.0 here.  Validation shows that nothing under 100 voxels beside the tumour is worth
    # keeping, so the rule drops up to that (a test patient's 50-voxel false positive goes too), and it stops
    # short of keep-largest, which would also drop a second tumour that this validation patient lacks
    truth = _tumour()
    pred = truth.copy()
    pred[26:28, 26:28, 26:28] = 2
    choice = post.choose([(pred, truth)], GLI2020, et_thresholds=(10,), component_sizes=(10, 100))
    assert choice.rules == [{"rule": "drop_small", "region": "WT", "min_voxels": 100}]


def test_keep_largest_is_kept_when_it_beats_every_drop_threshold():
    truth = _tumour()
    pred = truth.copy()
    pred[24:29, 24:29, 24:29] = 2  # a 125-voxel false positive: only keep-largest removes it
    choice = post.choose([(pred, truth)], GLI2020, et_thresholds=(10,), component_sizes=(10, 100))
    assert choice.rules == [{"rule": "keep_largest", "region": "WT"}]


def test_a_drop_threshold_that_would_cost_a_true_second_tumour_is_not_kept():
    truth = _tumour()
    truth[24:29, 24:29, 24:29] = 2  # a true 125-voxel second tumour
    pred = truth.copy()
    pred[1:3, 26:28, 26:28] = 2  # and an 8-voxel speck
    choice = post.choose([(pred, truth)], GLI2020, et_thresholds=(10,), component_sizes=(10, 100, 1000))
    assert choice.rules == [{"rule": "drop_small", "region": "WT", "min_voxels": 100}]
