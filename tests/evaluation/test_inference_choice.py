"""Validation by the per-patient mean Dice, and the inference window/TTA a run records and serving follows."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from shared import challenges, metrics
from serving import predictor as predictor_lib
from shared import trained_run
from trainer import metrics as train_metrics, resume

BRATS2020 = challenges.get("brats2020")


def _one_hot(classes: np.ndarray, k: int = 4) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[classes]


def _patient(size: int, tumour: int) -> np.ndarray:
    """A (size, size, size) volume of classes with a ``tumour``-voxel block of class 3 (ET, so in WT, TC, ET)."""
    classes = np.zeros((size,) * 3, np.uint8)
    classes.reshape(-1)[:tumour] = 3
    return classes


def _keras_metric(metric, truths, preds) -> float:
    metric.reset_state()
    for t, p in zip(truths, preds):  # one patient per batch, as the trainer's validation
        metric.update_state(_one_hot(t)[None], _one_hot(p)[None])
    return float(metric.result())


def _epochs():
    """Two 'epochs' over a big- and a small-tumour patient on which pooled and per-patient Dice disagree.

    Epoch A segments the big tumour perfectly and misses the small one;
    epoch B misses a fifth of the big one and gets the small one right.
    """
    truths = [_patient(12, 1000), _patient(12, 10)]
    a = [truths[0].copy(), np.zeros_like(truths[1])]
    b = [_patient(12, 800), truths[1].copy()]
    return truths, a, b


def test_patient_mean_dice_is_the_mean_of_shared_metrics_per_patient_dice():
    truths, a, b = _epochs()
    b[1].reshape(-1)[20:25] = 1  # a false-positive necrosis: TC and WT differ from ET
    ranked = {r: BRATS2020.region_classes()[r] for r in metrics.ranked_regions(BRATS2020)}
    patient_mean = train_metrics.PatientMeanDice(ranked, num_classes=4)
    for preds in (a, b):
        expected = metrics.mean_patient_dice([metrics.region_dice(p, t, BRATS2020) for p, t in zip(preds, truths)])
        assert _keras_metric(patient_mean, truths, preds) == pytest.approx(expected, abs=1e-6)


def test_a_region_empty_in_both_scores_one_and_in_one_only_zero():
    ranked = {"ET": (3,)}
    metric = train_metrics.PatientMeanDice(ranked, num_classes=4)
    empty = np.zeros((4, 4, 4), np.uint8)
    assert _keras_metric(metric, [empty], [empty]) == 1.0
    assert _keras_metric(metric, [_patient(4, 3)], [empty]) == 0.0


def test_pooled_and_per_patient_dice_pick_different_epochs_and_the_checkpoint_follows_per_patient(tmp_path):
    truths, a, b = _epochs()
    ranked = {r: BRATS2020.region_classes()[r] for r in metrics.ranked_regions(BRATS2020)}
    pooled = train_metrics.MeanRegionDice(ranked, num_classes=4)
    patient = train_metrics.PatientMeanDice(ranked, num_classes=4)
    logs = [{"val_dice_mean": _keras_metric(pooled, truths, p), "val_patient_dice_mean": _keras_metric(patient, truths, p)}
            for p in (a, b)]
    assert logs[0]["val_dice_mean"] > logs[1]["val_dice_mean"]  # pooled prefers A (the big tumour dominates)
    assert logs[1]["val_patient_dice_mean"] > logs[0]["val_patient_dice_mean"]  # BraTS' mean prefers B

    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = resume.BestCheckpoint(str(tmp_path / "best.keras"), None)
    checkpoint.set_model(net)
    for epoch, values in enumerate(logs):
        checkpoint.on_epoch_end(epoch, values)
    assert resume.MONITOR == "val_patient_dice_mean" and checkpoint.best_epoch == 1


def test_a_backup_from_before_the_monitor_changed_forgets_its_pooled_best():
    old = resume.RunState.from_json({"epoch": 3, "best": 0.9, "best_epoch": 2, "stopping_best": 0.9})
    assert old.monitor == resume.LEGACY_MONITOR
    fresh = old.on_monitor()
    assert fresh.best is None and fresh.stopping_best is None and fresh.epoch == 3 and fresh.monitor == resume.MONITOR
    current = resume.RunState(best=0.5)
    assert resume.RunState.from_json(current.to_json()).on_monitor().best == 0.5


def test_training_records_the_best_window_and_tta_which_serving_follows(tiny_model):
    """The tiny_model fixture ran a default training: it measured the windows and TTA at its end."""
    run = tiny_model.parent
    with open(run / "history.csv") as f:
        assert "val_patient_dice_mean" in next(csv.reader(f))
    recorded = json.loads((run / trained_run.INFERENCE_FILE).read_text())
    pairs = [(c["window"], c["tta"]) for c in recorded["candidates"]]
    assert pairs[:2] == [("patch", "none"), ("volume", "none")]  # windows first, without TTA
    def rank(c):  # the Dice after the candidate's own post-processing: as it will be served
        return c["rank"]

    no_tta = max(recorded["candidates"][:2], key=rank)
    assert pairs[2:] == [(no_tta["window"], "all")] and recorded["seconds"] > 0  # TTA on the best window only
    assert recorded["split"] == "val" and recorded["patients"] >= 1
    best = max(recorded["candidates"], key=rank)
    assert (recorded["window"], recorded["tta"]) == (best["window"], best["tta"])
    assert recorded["patient_dice_mean"] == best["patient_dice_mean"] <= best["rank"]
    assert recorded["postprocessing"]["rules"] == best["postprocessing"]
    assert all({"patient_dice_WT", "patient_dice_TC", "patient_dice_ET", "window_size"} <= set(c)
               for c in recorded["candidates"])

    settings = predictor_lib.inference_settings(str(tiny_model))  # predict / evaluate without --window / --tta
    assert (settings.window, settings.tta) == (recorded["window"], recorded["tta"])
    assert settings.source.startswith("recorded in")
    asked = predictor_lib.inference_settings(str(tiny_model), "patch", "axes")
    assert (asked.window, asked.tta, asked.source) == ("patch", "axes", "asked")
    half = predictor_lib.inference_settings(str(run), tta="axes")  # the run folder; one setting asked, one recorded
    assert (half.window, half.tta) == (recorded["window"], "axes")


def test_a_model_without_a_recorded_choice_uses_the_patch_window_without_tta(stub_model):
    settings = predictor_lib.inference_settings(str(stub_model))
    assert (settings.window, settings.tta, settings.source) == ("patch", "none", "default")


def test_the_run_chose_its_post_processing_and_prediction_applies_it(tiny_model):
    run = tiny_model.parent
    chosen = json.loads((run / trained_run.POSTPROCESSING_FILE).read_text())
    assert chosen["challenge"] == "brats2020" and chosen["patients"] >= 1 and chosen["tried"]
    predictor = predictor_lib.load_predictor(str(tiny_model))  # postprocessing "auto", the default
    assert predictor.postprocessing_path == str(run / trained_run.POSTPROCESSING_FILE)
    assert list(predictor.postprocessing) == chosen["rules"]
    assert predictor_lib.load_predictor(str(tiny_model), postprocessing="none").postprocessing == ()


def test_the_tta_pass_replays_the_identity_predictions_of_the_no_tta_pass():
    from evaluation.inference_choice import _Reuse
    from serving import inference

    calls = []

    def predict(batch):
        calls.append(batch.shape)
        return np.tanh(batch[..., :2] + np.arange(batch.shape[1])[None, :, None, None, None])

    image = np.random.default_rng(0).standard_normal((12, 10, 8, 1)).astype(np.float32)
    reuse = _Reuse(predict)
    inference.sliding_window(reuse, image, (8, 8, 8), tta="none")
    first = len(calls)
    replayed = inference.sliding_window(reuse.replay(8), image, (8, 8, 8), tta="all")
    assert len(calls) - first == 7 * first  # the identity pass came from the no-TTA pass
    np.testing.assert_allclose(replayed, inference.sliding_window(predict, image, (8, 8, 8), tta="all"), atol=1e-6)


def test_a_recipe_may_set_the_tta_prediction_uses_without_scoring_it(tiny_dataset, tmp_path):
    # tiny_cpu scores its choice without TTA (8 mirrored passes of 4 validation brains cost a sixth of its
    # training at full size) yet predicts with every mirror, as nnU-Net does: the record must say which
    # TTA prediction uses and that it was set, not measured
    from configs.train import tiny_cpu
    from evaluation import inference_choice
    from trainer import training

    cfg = tiny_cpu.get_config()
    assert (cfg.inference_choice.tta, cfg.inference_choice.prediction_tta) == ("none", "all")
    cfg.data_dir = tiny_dataset.dataset_dir
    cfg.patch_size, cfg.epochs, cfg.steps_per_epoch = (16, 16, 16), 1, 1
    said = []
    outcome = training.train_and_evaluate(cfg, str(tmp_path), echo=said.append,
                                          after_training=inference_choice.after_training)
    recorded = json.loads((tmp_path / trained_run.INFERENCE_FILE).read_text())
    assert [c["tta"] for c in recorded["candidates"]] == ["none"]  # scored without TTA, patch window only
    assert (recorded["window"], recorded["tta"]) == ("patch", "all")
    assert recorded["tta_set_by"] == "inference_choice.prediction_tta"
    assert any("TTA all" in line and "prediction_tta" in line for line in said), said
    settings = predictor_lib.inference_settings(outcome.model_path)
    assert (settings.window, settings.tta) == ("patch", "all")


def test_a_tta_mode_that_does_not_exist_is_refused_before_training(tmp_path):
    from configs.train import tiny_cpu
    from evaluation import inference_choice

    for field, value in (("prediction_tta", "mirrors"), ("tta", "none,flip")):
        cfg = tiny_cpu.get_config()
        cfg.inference_choice[field] = value
        with pytest.raises(ValueError, match=f"inference_choice.{field}.*none, axes, all"):
            inference_choice.check_options(cfg)
    inference_choice.check_options(tiny_cpu.get_config())
