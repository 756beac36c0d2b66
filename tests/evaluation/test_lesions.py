"""Lesion-wise scores (BraTS 2023-2025), matched lesions (2026) and the two HD95 reductions.

Every expected number is derived in the test's docstring from the shapes
drawn; volumes are tiny so the whole file runs in about a second.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.evaluation import brats_reference
from evaluation import components, lesions, lesionwise, matching, schemes
from shared import challenges, metrics
from shared.challenges import LesionRule

P = 374.0  # penalty used where the test picks its own


def _vol(shape=(24, 24, 24)) -> np.ndarray:
    return np.zeros(shape, dtype=bool)


def _cube(mask: np.ndarray, corner, size) -> np.ndarray:
    x, y, z = corner
    sx, sy, sz = (size,) * 3 if np.isscalar(size) else size
    mask[x:x + sx, y:y + sy, z:z + sz] = True
    return mask


def _lesionwise(pred, truth, rule=LesionRule(1, 0), spacing=(1.0, 1.0, 1.0), merge=False):
    return lesionwise.lesionwise_region(pred, truth, rule, P, spacing, merge_predictions=merge)


# -- BraTS 2023-2025 lesion-wise ------------------------------------------------

def test_two_true_lesions_closer_than_the_dilation_are_one_lesion():
    """Truth: 3-voxel cubes at x 2..4 and x 7..9, a gap of 2 voxels (x 5, 6).

    One dilation grows each cube by 1 voxel along x (to 5 and to 6): the dilated
    cubes touch, so the truth is ONE lesion of 54 voxels.  The prediction is the
    first cube (27 voxels, all inside): Dice = 2*27 / (54+27) = 2/3, one TP, no FN.
    With the second cube one voxel further (gap 3: x 5, 6, 7) the dilations
    leave x 6 between them: two lesions, the first perfect (Dice 1, HD95 0) and
    the second missed (Dice 0, HD95 = penalty): Dice 1/2, HD95 P/2, TP 1, FN 1.
    """
    truth = _cube(_cube(_vol(), (2, 2, 2), 3), (7, 2, 2), 3)
    pred = _cube(_vol(), (2, 2, 2), 3)
    scores, records = _lesionwise(pred, truth)
    assert [r["volume_mm3"] for r in records] == [54.0]
    assert scores["dice"] == pytest.approx(2 / 3) and (scores["tp"], scores["fn"], scores["fp"]) == (1, 0, 0)

    truth = _cube(_cube(_vol(), (2, 2, 2), 3), (8, 2, 2), 3)
    scores, records = _lesionwise(pred, truth)
    assert len(records) == 2
    assert scores == {"dice": 0.5, "hd95": P / 2, "tp": 1, "fp": 0, "fn": 1}


def test_a_missed_lesion_counts_only_above_the_volume_threshold():
    """Truth: a 5^3 cube found exactly and a 2^3 = 8 mm^3 cube far away, missed.

    Threshold 10 mm^3: the small lesion (8 <= 10) drops out: Dice 1/1, HD95 0/1.
    Threshold 8: "at or below" still drops it.  Threshold 5: it counts: Dice
    (1 + 0)/2 = 0.5, HD95 (0 + P)/2, one FN.  A missed lesion is still listed
    in the per-lesion records either way, marked not counted.
    """
    truth = _cube(_cube(_vol(), (2, 2, 2), 5), (16, 16, 16), 2)
    pred = _cube(_vol(), (2, 2, 2), 5)
    for threshold in (10, 8):
        scores, records = _lesionwise(pred, truth, LesionRule(1, threshold))
        assert scores == {"dice": 1.0, "hd95": 0.0, "tp": 1, "fp": 0, "fn": 0}
        assert [(r["volume_mm3"], r["counted"], r["matched"]) for r in records] == [(125.0, True, True),
                                                                                   (8.0, False, False)]
    scores, _ = _lesionwise(pred, truth, LesionRule(1, 5))
    assert scores == {"dice": 0.5, "hd95": P / 2, "tp": 1, "fp": 0, "fn": 1}


def test_a_false_positive_far_away_is_charged_in_2023_and_dropped_when_small_in_2024():
    """Truth: a 4^3 cube, found exactly.  Prediction adds a 2^3 = 8 mm^3 cube far away.

    2023 (every predicted component counts): one FP, Dice (1 + 0)/(1 + 1) = 0.5,
    HD95 (0 + P)/2.  2024 with threshold 10 mm^3: predicted lesions at or below
    the threshold are dropped before matching, so the 8 mm^3 blob vanishes and
    the scores are perfect (Dice 1, HD95 0).
    """
    truth = _cube(_vol(), (2, 2, 2), 4)
    pred = _cube(_cube(_vol(), (2, 2, 2), 4), (18, 18, 18), 2)
    scores, records = _lesionwise(pred, truth, LesionRule(1, 10))
    assert scores == {"dice": 0.5, "hd95": P / 2, "tp": 1, "fp": 1, "fn": 0}
    fp = [r for r in records if r["kind"] == "false_positive"]
    assert [(r["volume_mm3"], r["hd95"]) for r in fp] == [(8.0, P)]
    scores, _ = _lesionwise(pred, truth, LesionRule(1, 10), merge=True)
    assert scores == {"dice": 1.0, "hd95": 0.0, "tp": 1, "fp": 0, "fn": 0}


def _split_case():
    """Truth: a 9x3x3 bar (81 voxels) at x 2..10.  Prediction: x 2..6 (5x3x3 = 45 voxels) and
    x 8..10 (3x3x3 = 27 voxels); the slice x 7 is missing, so the pieces are two components."""
    truth = _cube(_vol(), (2, 2, 2), (9, 3, 3))
    pred = _cube(_cube(_vol(), (2, 2, 2), (5, 3, 3)), (8, 2, 2), (3, 3, 3))
    return pred, truth


def test_a_prediction_that_splits_a_lesion_is_one_hit_lesion_wise():
    """Both pieces reach the bar's dilated zone, so their union (72 voxels, all
    inside) is scored against it: Dice = 2*72 / (81 + 72) = 16/17; one TP, no FP.
    Merging predictions (2024, dilation 1 bridges the one-slice gap) gives the same."""
    pred, truth = _split_case()
    scores, records = _lesionwise(pred, truth)
    assert scores["dice"] == pytest.approx(16 / 17) and (scores["tp"], scores["fp"], scores["fn"]) == (1, 0, 0)
    assert [r["kind"] for r in records] == ["truth"]
    merged, _ = _lesionwise(pred, truth, merge=True)
    assert merged == scores


def test_a_prediction_that_splits_a_lesion_leaves_one_piece_unmatched_in_2026():
    """One-to-one matching keeps the better piece: Dice 2*45/(81+45) = 5/7 against
    2*27/(81+27) = 1/2.  The other piece is a false positive: TP 1, FP 1, FN 0,
    precision 1/2, recall 1, F1 = 1/(1 + 1/2) = 2/3; PQ is the official pq_dsc,
    mean matched Dice x F1 = 5/7 * 2/3 = 10/21 (issue 20; it was IoU-based, kept as
    pq_iou: IoU of the match 45/81 = 5/9, 5/9 * 2/3 = 10/27)."""
    pred, truth = _split_case()
    scores, records = matching.matched_region(pred, truth)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 1, 0)
    assert scores["dice"] == pytest.approx(5 / 7) and scores["f1"] == pytest.approx(2 / 3)
    assert scores["precision"] == 0.5 and scores["recall"] == 1.0
    assert scores["pq"] == pytest.approx(10 / 21) and scores["pq_iou"] == pytest.approx(10 / 27)
    assert [(r["kind"], r["volume_mm3"], r["matched"]) for r in records] == [
        ("truth", 81.0, True), ("false_positive", 27.0, False)]


def test_hungarian_matching_maximises_total_dice_where_greedy_would_not():
    """Truth A: x 2..3 (2x4x4 = 32 voxels); truth B: x 5..9 (5x4x4 = 80); y, z 2..5.
    Prediction P: x 2..9, y 2..3 (64 voxels), overlapping A by 16 and B by 40;
    prediction Q: x 5..9, y 5 (20 voxels), inside B.

    Dice(P, A) = 32/96 = 1/3, Dice(P, B) = 80/144 = 5/9, Dice(Q, B) = 40/100 = 2/5.
    Taking the best pair first (P-B) would leave A and Q unmatched (one TP); the
    assignment on 1 - Dice pairs P-A and Q-B (1/3 + 2/5 > 5/9): two TPs, no FP or
    FN, mean Dice (1/3 + 2/5)/2 = 11/30.
    """
    truth = _cube(_cube(_vol(), (2, 2, 2), (2, 4, 4)), (5, 2, 2), (5, 4, 4))
    pred = _cube(_cube(_vol(), (2, 2, 2), (8, 2, 4)), (5, 5, 2), (5, 1, 4))
    scores, records = matching.matched_region(pred, truth)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 0, 0)
    assert scores["dice"] == pytest.approx(11 / 30)
    assert [r["dice"] for r in records] == pytest.approx([1 / 3, 2 / 5])


def test_empty_truth_with_and_without_false_positives():
    """No true lesion and no prediction: nothing to charge, Dice 1, HD95 0 (2023-2025),
    and the region drops out of 2026 means (NaN).  A 2^3 prediction on an empty
    truth is one FP: Dice 0/(0+1) = 0, HD95 P/1 = P; in 2026 F1 = 0, Dice 0,
    HD95 inf, precision 0/1 = 0, recall undefined (NaN)."""
    empty = _vol()
    assert _lesionwise(empty, empty)[0] == {"dice": 1.0, "hd95": 0.0, "tp": 0, "fp": 0, "fn": 0}
    both_empty, _ = matching.matched_region(empty, empty)
    assert all(math.isnan(both_empty[k]) for k in ("dice", "hd95", "f1", "pq", "precision", "recall"))

    pred = _cube(_vol(), (5, 5, 5), 2)
    assert _lesionwise(pred, empty)[0] == {"dice": 0.0, "hd95": P, "tp": 0, "fp": 1, "fn": 0}
    only_fp, records = matching.matched_region(pred, empty)
    assert (only_fp["f1"], only_fp["dice"], only_fp["hd95"], only_fp["precision"]) == (0.0, 0.0, math.inf, 0.0)
    assert math.isnan(only_fp["recall"]) and [r["kind"] for r in records] == ["false_positive"]


def _shifted_cubes():
    """Truth: 4^3 cube at z 2..5; prediction: the same cube one slice higher (z 3..6)."""
    return _cube(_vol(), (2, 2, 3), 4), _cube(_vol(), (2, 2, 2), 4)


def test_anisotropic_spacing_scales_distances_and_volumes_along_the_right_axis():
    """A 4^3 cube has 64 - 2^3 = 56 surface voxels (6-connected erosion).

    Shifting it one slice along axis 2 puts the prediction's top face (16 of 56
    surface voxels, 29 % > 5 %) one slice from the nearest truth voxel, every
    other surface voxel within one voxel across axis 0 or 1.  At 1x1x3 mm that
    slice is 3 mm: HD95 = 3 (either reduction); at 3x1x1 mm (the thick axis
    elsewhere) it is 1 mm.  NSD at 1 mm: 40 of 56 voxels within in each
    direction, 5/7 at 1x1x3 and 1 at 3x1x1.  Volume: 64 voxels are 192 mm^3 at
    1x1x3, so a 100 mm^3 threshold keeps the lesion there and drops it at 1 mm.
    """
    pred, truth = _shifted_cubes()
    for reduction in metrics.HD95_REDUCTIONS:
        assert metrics.hd95(pred, truth, (1, 1, 3), reduction) == pytest.approx(3.0)
        assert metrics.hd95(pred, truth, (3, 1, 1), reduction) == pytest.approx(1.0)
    thick_z, _ = matching.matched_region(pred, truth, (1.0, 1.0, 3.0))
    thick_x, _ = matching.matched_region(pred, truth, (3.0, 1.0, 1.0))
    assert thick_z["nsd"] == pytest.approx(5 / 7) and thick_x["nsd"] == pytest.approx(1.0)
    assert thick_z["hd95"] == pytest.approx(3.0)
    _, records = _lesionwise(pred, truth, LesionRule(1, 100), spacing=(1.0, 1.0, 3.0))
    assert records[0]["volume_mm3"] == 192.0 and records[0]["counted"] and records[0]["hd95"] == pytest.approx(3.0)
    scores, records = _lesionwise(pred, truth, LesionRule(1, 100))
    assert not records[0]["counted"] and scores["dice"] == 1.0  # 64 mm^3 <= 100: nothing counted


def test_pooled_and_max_directed_hd95_differ_by_the_known_amount():
    """Truth: one voxel.  Prediction: that voxel and one 20 voxels away along z.

    Distances prediction->truth: {0, 20}; truth->prediction: {0}.  numpy's
    linear 95th percentile of [0, 20] is 0.95*20 = 19, so max_directed = 19;
    pooled over [0, 0, 20] sits at rank 0.95*2 = 1.9: 0 + 0.9*20 = 18.  The
    difference is exactly 1 mm, and score_patient follows the reduction asked.
    """
    truth = _vol((24, 24, 40))
    truth[10, 10, 10] = True
    pred = truth.copy()
    pred[10, 10, 30] = True
    assert metrics.hd95(pred, truth) == pytest.approx(19.0)  # the default is unchanged
    assert metrics.hd95(pred, truth, reduction="max_directed") == pytest.approx(19.0)
    assert metrics.hd95(pred, truth, reduction="pooled") == pytest.approx(18.0)
    challenge = challenges.get("brats2020")
    classes_pred, classes_truth = pred.astype(np.uint8), truth.astype(np.uint8)
    pooled = metrics.score_patient(classes_pred, classes_truth, challenge, (1, 1, 1), hd95_reduction="pooled")
    default = metrics.score_patient(classes_pred, classes_truth, challenge, (1, 1, 1))
    assert (pooled["hd95_WT"], default["hd95_WT"]) == pytest.approx((18.0, 19.0))
    with pytest.raises(ValueError, match="unknown HD95 reduction"):
        metrics.hd95(pred, truth, reduction="mean")


# -- one patient, with the registry --------------------------------------------

def test_a_region_empty_in_both_scores_perfect_lesion_wise_and_is_left_out_in_2026():
    """BraTS 2023 GLI classes: 1 NETC, 2 SNFH, 3 ET; regions WT {1,2,3}, TC {1,3}, ET {3}.

    Truth and prediction are the same oedema-only (class 2) cube: WT is perfect
    (Dice 1, HD95 0, one TP); TC and ET are empty in both: lesion-wise Dice 1,
    HD95 0 and no counts (2023 rule); matched (2026): NaN, left out of means.
    """
    challenge = challenges.get("brats2023_gli")
    truth = _cube(_vol(), (4, 4, 4), 4).astype(np.uint8) * 2
    found = lesions.score_lesions(truth, truth, challenge, (1.0, 1.0, 1.0))
    assert found.scheme == "brats2023"
    by_region = {r.region: r.scores for r in found.regions}
    assert by_region["WT"] == {"dice": 1.0, "hd95": 0.0, "tp": 1, "fp": 0, "fn": 0}
    for region in ("TC", "ET"):
        assert by_region[region] == {"dice": 1.0, "hd95": 0.0, "tp": 0, "fp": 0, "fn": 0}
    matched = {r.region: r.scores for r in lesions.score_lesions(truth, truth, challenge, (1, 1, 1), "brats2026").regions}
    assert matched["WT"]["dice"] == 1.0 and matched["WT"]["f1"] == 1.0 and matched["WT"]["hd95"] == 0.0
    assert math.isnan(matched["ET"]["dice"]) and math.isnan(matched["TC"]["f1"])


def test_the_challenge_penalty_is_used_and_native_tasks_use_the_volume_diagonal():
    """A missed lesion's HD95 is the challenge's penalty: 374 (GLI 2023), 337 (GLI 2024),
    and for MEN-RT the diagonal of the scored volume in voxels: sqrt(30^2 + 40^2 + 120^2)
    = sqrt(16900) = 130.  Truth: one 4^3 cube of label 1; prediction empty."""
    shape = (30, 40, 120)
    truth = np.zeros(shape, np.uint8)
    truth[5:9, 5:9, 5:9] = 1
    pred = np.zeros_like(truth)
    for name, region, penalty in (("brats2023_gli", "TC", 374.0), ("brats2024_gli", "NETC", 337.0),
                                  ("brats2024_men_rt", "GTV", 130.0)):
        challenge = challenges.get(name)
        row = lesions.score_lesions(pred, truth, challenge, (1.0, 1.0, 1.0)).row()
        assert row[f"lesion_hd95_{region}"] == pytest.approx(penalty) and row[f"lesion_fn_{region}"] == 1


def test_the_2024_gli_registry_matches_the_reference_code():
    """BraTS-2024-Metrics metrics_GLI.py: dilation 5 for NETC and RC only (its SNFH check is
    spelt "SFNH", so SNFH keeps 3); threshold 10 mm^3 for ET, 20 otherwise; penalty 337;
    predictions thresholded in voxels; combine_lesions_tissues joins NETC through ET then RC,
    ET through NETC then RC, RC through ET then NETC, SNFH through ET, RC, NETC.  MEN-RT alone
    thresholds predictions in mm^3 (``counts <= thresh / (sx*sy*sz)``); SSA and MET join ET through NETC."""
    gli = challenges.get("brats2024_gli")
    assert {r: (rule.dilation, rule.min_volume_mm3) for r, rule in gli.lesion_rules.items()} == {
        "WT": (3, 20), "TC": (3, 20), "SNFH": (3, 20), "ET": (3, 10), "NETC": (5, 20), "RC": (5, 20)}
    assert {j.region: j.partners for j in gli.lesion_joins} == {
        "NETC": ("ET", "RC"), "ET": ("NETC", "RC"), "RC": ("ET", "NETC"), "SNFH": ("ET", "RC", "NETC")}
    units = {name: c.lesion_prediction_unit for name, c in challenges.CHALLENGES.items() if c.lesion_rules}
    assert {name for name, unit in units.items() if unit == "mm3"} == {"brats2024_men_rt"}
    for name, rule in (("brats2024_ssa", LesionRule(3, 50)), ("brats2024_met", LesionRule(1, 2)),
                       ("brats2025_met", LesionRule(1, 2))):
        assert [(j.region, j.partners, j.partner_rule) for j in challenges.get(name).lesion_joins] == [
            ("ET", ("NETC",), rule)]


def test_schemes_default_to_the_challenge_year_and_refuse_what_cannot_apply():
    """2020/2021 ranked whole regions; 2023 GLI and MEN ran the 2023 code; later tasks the 2024 code.
    A lesion-wise scheme on BraTS 2020 (no lesion parameters) is refused; matching works anywhere."""
    assert schemes.default_for(challenges.get("brats2020")).name == "brats2020"
    assert schemes.default_for(challenges.get("brats2023_men")).name == "brats2023"
    assert schemes.default_for(challenges.get("brats2024_met")).name == "brats2024"
    with pytest.raises(ValueError, match="no lesion|has none"):
        schemes.resolve(challenges.get("brats2020"), "brats2023")
    assert schemes.resolve(challenges.get("brats2020"), "brats2026").lesion_method == "matched"
    sentence = schemes.describe(schemes.get("brats2026"))
    assert "pooled" in sentence and "empty in both" in sentence


def test_lesion_table_for_one_patient_names_its_scheme():
    """The web app's entry point: a perfect prediction of one ET cube under GLI 2023
    lists WT, TC and ET with Dice 1, one truth lesion each, and the scheme sentence."""
    challenge = challenges.get("brats2023_gli")
    truth = _cube(_vol(), (4, 4, 4), 4).astype(np.uint8) * 3
    table = lesions.lesion_table(truth, truth, challenge, (1.0, 1.0, 1.0))
    assert [r["region"] for r in table["regions"]] == ["WT", "TC", "ET"]
    assert all(r["dice"] == 1.0 for r in table["regions"]) and len(table["lesions"]) == 3
    assert "Scheme brats2023" in table["text"] and "374" in table["text"]


def _reference_loop(pred, truth, rule, penalty, merge=False):
    """The BraTS-2023-Metrics loop written out literally on the full volume (one
    dilation per lesion, no cropping, DeepMind's HD95): what the fast version must reproduce.
    ``merge``: the 2024 code's predictions, merged by dilation and dropped at or
    below the threshold (1 mm voxels here)."""
    struct = components.DILATION_STRUCTURE
    from scipy import ndimage

    zones, n = ndimage.label(ndimage.binary_dilation(truth, struct, iterations=rule.dilation),
                             components.CONNECTIVITY_26)
    lesion_ids = zones * truth
    pred_ids, _ = ndimage.label(pred, components.CONNECTIVITY_26)
    if merge:
        pred_zones, _ = ndimage.label(ndimage.binary_dilation(pred, struct, iterations=rule.dilation),
                                      components.CONNECTIVITY_26)
        pred_ids = pred_zones * pred
        small = [i for i, c in enumerate(np.bincount(pred_ids.ravel())) if i and 0 < c <= rule.min_volume_mm3]
        pred_ids[np.isin(pred_ids, small)] = 0
    hit_all, dices, hds, tp, fn = set(), [], [], 0, 0
    for k in range(1, n + 1):
        lesion = lesion_ids == k
        zone = ndimage.binary_dilation(lesion, struct, iterations=rule.dilation)
        hits = set(np.unique(pred_ids[zone]).tolist()) - {0}
        hit_all |= hits
        hit_mask = np.isin(pred_ids, list(hits))
        dice = 2.0 * np.count_nonzero(hit_mask & lesion) / (np.count_nonzero(hit_mask) + np.count_nonzero(lesion))
        hd = brats_reference.hd95(lesion, hit_mask, (1.0, 1.0, 1.0)) if hits else penalty
        if np.count_nonzero(lesion) > rule.min_volume_mm3:
            dices.append(dice)
            hds.append(hd)
            tp, fn = tp + bool(hits), fn + (not hits)
    n_fp = len(set(np.unique(pred_ids).tolist()) - {0} - hit_all)
    total = len(dices) + n_fp
    return {"dice": sum(dices) / total, "hd95": (sum(hds) + n_fp * penalty) / total, "tp": tp, "fp": n_fp, "fn": fn}


@pytest.mark.parametrize("seed, merge", [(0, False), (1, False), (2, True)])
def test_the_fast_lesion_wise_scores_equal_the_literal_reference_loop(seed, merge):
    """Random blobs over a volume wide enough to split into several clusters:
    pairs of true cubes 2d, 2d+1 or 2d+2 voxels apart at random offsets (merged,
    just apart), some found one voxel off, some missed, false positives, some
    touching the volume's border.  The clustered, single-pass version gives the
    same Dice, HD95 and counts as the literal per-lesion loop on the full volume,
    in the 2023 procedure and (``merge``) the 2024 one."""
    rng = np.random.default_rng(seed)
    rule = LesionRule(2, 8)
    shape = np.array((96, 96, 48))
    truth, pred = _vol(tuple(shape)), _vol(tuple(shape))
    for n in range(8):
        size = rng.integers(1, 5, size=3)
        corner = rng.integers(0, shape - size - 8)
        _cube(truth, corner, tuple(size))
        if n % 3 == 0:  # a neighbour 2d .. 2d+2 voxels away along a random axis
            offset = np.zeros(3, int)
            axis = rng.integers(0, 3)
            offset[axis] = size[axis] + 2 * rule.dilation + rng.integers(0, 3)
            _cube(truth, corner + offset, tuple(size))
        if n < 5:  # found, one voxel off
            _cube(pred, np.minimum(corner + rng.integers(0, 2, size=3), shape - size), tuple(size))
        if n % 2:
            _cube(pred, rng.integers(0, shape - 3), tuple(rng.integers(1, 4, size=3)))
    fast = _lesionwise(pred, truth, rule, merge=merge)[0]
    assert fast["dice"] > 0 and fast["tp"] > 0  # the case exercises real overlaps
    assert len(components.clusters(pred | truth, rule.dilation)) > 1  # and several clusters
    assert fast == pytest.approx(_reference_loop(pred, truth, rule, P, merge))


# -- 2024: prediction threshold units and cross-tissue joining ----------------------

def _labels(shape=(32, 32, 12)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


def test_the_2024_prediction_threshold_counts_voxels_except_for_men_rt():
    """Voxels of 1 x 1 x 2 mm.  GLI ET (threshold 10): truth a 3^3 cube (54 mm^3, counted),
    predicted exactly; the prediction adds a 2^3 cube far away: 8 voxels = 16 mm^3.
    The reference drops predicted lesions of at most 10 *voxels*: 8 <= 10, gone, ET perfect
    (Dice 1, no FP).  Counted in mm^3 it would stay (16 > 10): one FP, Dice (1 + 0)/2 = 0.5.

    MEN-RT (threshold 50, ``counts <= 50 / (sx*sy*sz)`` = 25 voxels): a predicted 3^3
    cube (27 voxels = 54 mm^3) stays as a FP (Dice 0.5), where a voxel count would drop it (27 <= 50)."""
    import dataclasses

    spacing = (1.0, 1.0, 2.0)
    gli = challenges.get("brats2024_gli")  # class 3 = ET (label 3)
    truth = _labels()
    truth[2:5, 2:5, 2:5] = 3
    pred = truth.copy()
    pred[20:22, 20:22, 6:8] = 3
    by_region = {r.region: r.scores for r in lesions.score_lesions(pred, truth, gli, spacing).regions}
    assert by_region["ET"] == {"dice": 1.0, "hd95": 0.0, "tp": 1, "fp": 0, "fn": 0}
    in_mm3 = dataclasses.replace(gli, name="gli_mm3", lesion_prediction_unit="mm3")
    by_region = {r.region: r.scores for r in lesions.score_lesions(pred, truth, in_mm3, spacing).regions}
    assert by_region["ET"]["dice"] == 0.5 and by_region["ET"]["fp"] == 1

    men_rt = challenges.get("brats2024_men_rt")
    truth = _labels()
    truth[2:6, 2:6, 2:6] = 1
    pred = truth.copy()
    pred[20:23, 20:23, 6:9] = 1
    gtv = lesions.score_lesions(pred, truth, men_rt, spacing).regions[0].scores
    assert gtv["dice"] == 0.5 and gtv["fp"] == 1
    in_voxels = dataclasses.replace(men_rt, name="men_rt_voxels", lesion_prediction_unit="voxels")
    assert lesions.score_lesions(pred, truth, in_voxels, spacing).regions[0].scores["fp"] == 0
    # the single-region entry point takes the unit too
    mask_p, mask_t = pred > 0, truth > 0
    assert lesionwise.lesionwise_region(mask_p, mask_t, LesionRule(1, 50), 100.0, spacing, merge_predictions=True,
                                        prediction_unit="mm3")[0]["fp"] == 1
    assert lesionwise.lesionwise_region(mask_p, mask_t, LesionRule(1, 50), 100.0, spacing,
                                        merge_predictions=True)[0]["fp"] == 0


def test_two_netc_lesions_touching_the_same_et_lesion_are_one_lesion_in_2024():
    """GLI 2024.  Truth: an ET bar (label 3) x 2..29, y 5..6, z 5..6, and two NETC cubes
    (label 1, 3^3 = 27 voxels) stuck to it at x 2..4 and x 24..26, y 7..9.  The cubes are
    19 voxels apart, far more than NETC's dilation 5 bridges (11), so by dilation they
    are two lesions; but both touch ET lesion 1, so combine_lesions_NETC gives them one
    label: one NETC lesion of 54 voxels.  The prediction has the bar and the first cube:
    Dice 2*27/(54+27) = 2/3, one TP, no FN.  Without the joining: the first cube is
    perfect, the second missed: Dice (1 + 0)/2, one FN.  The 2023 procedure never joins."""
    import dataclasses

    gli = challenges.get("brats2024_gli")
    truth = _labels()
    truth[2:30, 5:7, 5:7] = 3
    truth[2:5, 7:10, 4:7] = 1
    truth[24:27, 7:10, 4:7] = 1
    pred = truth.copy()
    pred[24:27, 7:10, 4:7] = 0
    found = lesions.score_lesions(pred, truth, gli, (1.0, 1.0, 1.0))
    netc = {r.region: r for r in found.regions}["NETC"]
    assert netc.scores["dice"] == pytest.approx(2 / 3) and (netc.scores["tp"], netc.scores["fn"]) == (1, 0)
    assert [r["volume_mm3"] for r in netc.lesions if r["kind"] == "truth"] == [54.0]
    unjoined = dataclasses.replace(gli, name="gli_unjoined", lesion_joins=())
    netc = {r.region: r.scores for r in lesions.score_lesions(pred, truth, unjoined, (1, 1, 1)).regions}["NETC"]
    assert netc["dice"] == 0.5 and netc["fn"] == 1
    netc = {r.region: r.scores for r in lesions.score_lesions(pred, truth, gli, (1, 1, 1), "brats2023").regions}["NETC"]
    assert netc["dice"] == 0.5 and netc["fn"] == 1


def test_joining_keys_each_lesion_by_its_lowest_touching_partner_and_is_not_transitive():
    """GLI 2024, truth scored against itself.  ET bars E1 (x 2..3) and E2 (x 20..21), both
    y 2..30, z 4..5: 16 voxels apart, two ET lesions, E1 numbered first (C raster order).
    NETC A (x 4..19, y 2..4) touches both; NETC B (x 22..25, y 26..29; 32 voxels, above the threshold 20) touches E2 only;
    A and B are 22 voxels apart (no dilation merge).  relabel_nifti_image keys A by its
    lowest touching ET lesion (E1) and B by E2: different keys, so NETC stays TWO
    lesions (a union of everything touching would make one).  For ET, E1 touches A only
    (key A) and E2 touches A and B (key min(A, B) = A, numbered first): same key, so ET
    is ONE lesion.  The literal reference transcription agrees."""
    gli = challenges.get("brats2024_gli")
    truth = _labels((32, 34, 10))
    truth[2:4, 2:31, 4:6] = 3
    truth[20:22, 2:31, 4:6] = 3
    truth[4:20, 2:5, 4:6] = 1
    truth[22:26, 26:30, 4:6] = 1
    by_region = {r.region: r for r in lesions.score_lesions(truth, truth, gli, (1.0, 1.0, 1.0)).regions}
    assert by_region["NETC"].scores["tp"] == 2 and by_region["ET"].scores["tp"] == 1
    reference = brats_reference.lesionwise_2024(truth, truth, brats_reference.GLI)
    assert (reference["NETC"]["tp"], reference["ET"]["tp"]) == (2, 1)


def _joined_case(rng, shape=(48, 40, 12)):
    """Three ET bars with small NETC / SNFH / RC blocks stuck to them every 13 voxels
    (only touching joins them), and a few random blocks of any label in the prediction."""
    truth = np.zeros(shape, np.uint8)
    for y in (4, 18, 32):
        truth[2:46, y:y + 2, 4:6] = 3
        for x in range(2, 44, 13):
            yy = y + 2 if rng.random() < 0.5 else y - 2
            truth[x + rng.integers(0, 3):x + 5, yy:yy + 2, 4:6 + rng.integers(0, 2)] = rng.choice((1, 2, 4))
    pred = truth.copy()
    for _ in range(3):
        x, y = rng.integers(0, 44), rng.integers(0, 36)
        pred[x:x + 3, y:y + 3, 3:7] = rng.choice((0, 1, 2, 3, 4))
    return pred, truth


def _random_case(rng, labels, shape=(40, 40, 24), n=12):
    """Random label boxes (later ones overwrite), the prediction shifted by up to a voxel and
    partly repainted."""
    truth = np.zeros(shape, np.uint8)
    for _ in range(n):
        size = rng.integers(1, 7, size=3)
        corner = rng.integers(0, np.array(shape) - size)
        truth[tuple(slice(c, c + s) for c, s in zip(corner, size))] = rng.choice(labels)
    pred = np.roll(truth, tuple(rng.integers(-1, 2, size=3)), axis=(0, 1, 2)).copy()
    for _ in range(4):
        size = rng.integers(1, 5, size=3)
        corner = rng.integers(0, np.array(shape) - size)
        pred[tuple(slice(c, c + s) for c, s in zip(corner, size))] = rng.choice((0,) + labels)
    return pred, truth


@pytest.mark.parametrize("task, seed, spacing", [("gli_joined", 0, (1.0, 1.0, 1.0)), ("gli_joined", 1, (1.0, 1.0, 2.0)),
                                                 ("gli", 2, (0.8, 1.0, 1.5)), ("ssa", 3, (1.0, 1.0, 1.0)),
                                                 ("ssa", 4, (1.0, 1.0, 2.0))])
def test_2024_scores_equal_a_literal_transcription_of_the_reference(task, seed, spacing):
    """Every region of GLI 2024 (labels 1..4; bars with stuck-on blocks, where the joining
    decides the lesions, or random boxes) and SSA (ET joined through NETC), at 1 mm and
    anisotropic spacing: score_lesions gives the same Dice, HD95 and counts as
    brats_reference.lesionwise_2024, a step-by-step transcription of metrics_GLI.py /
    metrics_SSA.py (per-tissue dilation merge, voxel-count threshold, touching pairs and
    relabelling, per-lesion dilation loop, DeepMind HD95)."""
    rng = np.random.default_rng(seed)
    if task == "gli_joined":
        pred, truth = _joined_case(rng)
    else:
        pred, truth = _random_case(rng, (1, 2, 3, 4) if task == "gli" else (1, 2, 3))
    challenge = challenges.get("brats2024_ssa" if task == "ssa" else "brats2024_gli")
    expected = brats_reference.lesionwise_2024(pred, truth, brats_reference.SSA if task == "ssa"
                                               else brats_reference.GLI, spacing)
    # class volumes: GLI and SSA number classes as their labels
    found = {r.region: r.scores for r in lesions.score_lesions(pred, truth, challenge, spacing).regions}
    assert set(found) == set(expected)
    for region, scores in expected.items():
        assert found[region] == pytest.approx(scores, rel=1e-12, abs=1e-12), region
