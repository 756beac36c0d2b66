"""Region-based training (target=regions): decoding rule, loss, metrics, deep supervision, end to end."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs.train import tiny_cpu
from evaluation import scoring
from serving import inference, inputs, prediction, predictor as predictor_lib
from shared import challenges, regions
from tests.helpers import override
from trainer import losses, metrics, model as model_lib, targets, training


def _one_hot(classes, k):
    return (np.asarray(classes)[..., None] == np.arange(k)).astype(np.float32)


def test_glioma_regions_decode_by_nnunet_rule():
    d = regions.decoding(challenges.get("brats2023_gli"))
    assert d.names == ("WT", "TC", "ET")
    #            WT    TC    ET  -> ET wins, then TC (necrosis 1), then WT (oedema 2)
    probs = np.array([[0.9, 0.9, 0.9], [0.9, 0.9, 0.1], [0.9, 0.1, 0.1], [0.1, 0.1, 0.1],
                      [0.1, 0.1, 0.9], [0.1, 0.7, 0.2]])
    np.testing.assert_array_equal(d.to_classes(probs), [3, 1, 2, 0, 3, 1])


@pytest.mark.parametrize("name", sorted(challenges.CHALLENGES))
def test_every_challenges_regions_of_a_truth_decode_back_to_it(name):
    challenge = challenges.get(name)
    d = regions.decoding(challenge)
    classes = np.random.default_rng(0).integers(0, challenge.num_classes, size=(5, 6, 7))
    np.testing.assert_array_equal(d.to_classes(d.to_regions(classes).astype(np.float32)), classes)


def test_a_label_no_region_writes_is_refused_by_name():
    only_wt = dataclasses.replace(challenges.get("brats2023_gli"), regions={"WT": (1, 2, 3)}, lesion_rules={})
    with pytest.raises(ValueError, match=r"could not predict label\(s\) \['SNFH', 'ET'\]"):
        regions.decoding(only_wt)


def test_region_loss_is_low_for_the_truths_regions_and_high_for_their_complement():
    challenge = challenges.get("brats2020")
    d = regions.decoding(challenge)
    classes = np.random.default_rng(1).integers(0, 4, size=(2, 8, 8, 8))
    y = _one_hot(classes, 4)
    right = d.to_regions(classes).astype(np.float32)
    loss = losses.region_loss("dice_ce", d.membership().tolist())
    assert float(loss(y, right)) < 1e-3
    assert float(loss(y, 1.0 - right)) > 2.0
    with pytest.raises(ValueError, match="unknown loss"):
        losses.region_loss("focal", d.membership().tolist())


def _equal_weight_region_loss(targets, probabilities):
    """nnU-Net's region dice_ce written out in numpy: 1 - mean region Dice (pooled) + BCE over voxels and regions."""
    axes = tuple(range(targets.ndim - 1))
    dice = (2 * (targets * probabilities).sum(axes) + 1e-5) / (targets.sum(axes) + probabilities.sum(axes) + 1e-5)
    p = np.clip(probabilities, 1e-7, 1 - 1e-7)
    return 1 - dice.mean() - np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))


def test_region_weights_count_a_region_more_and_equal_weights_change_nothing():
    d = regions.decoding(challenges.get("brats2020"))
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 4, size=(2, 6, 6, 6))
    y, truth = _one_hot(classes, 4), d.to_regions(classes).astype(np.float32)
    wrong_tc = truth.copy()
    wrong_tc[..., 1] = rng.uniform(size=wrong_tc.shape[:-1])  # only TC is wrong
    plain = losses.region_loss("dice_ce", d.membership().tolist())
    assert float(plain(y, wrong_tc)) == pytest.approx(_equal_weight_region_loss(truth, wrong_tc), rel=1e-5)
    equal = losses.region_loss("dice_ce", d.membership().tolist(), weights=[2, 2, 2])
    assert float(equal(y, wrong_tc)) == pytest.approx(float(plain(y, wrong_tc)), rel=1e-6)
    tc_twice = losses.region_loss("dice_ce", d.membership().tolist(), weights=[1, 2, 1])
    assert float(tc_twice(y, wrong_tc)) == pytest.approx(float(plain(y, wrong_tc)) * 3 * 2 / 4, rel=1e-5)
    only_wt = losses.region_loss("dice_ce", d.membership().tolist(), weights=[1, 0, 0])
    assert float(only_wt(y, wrong_tc)) < 1e-3  # the wrong region does not count at all
    assert losses.RegionLoss.from_config(tc_twice.get_config()).weights == [1.0, 2.0, 1.0]


@pytest.mark.parametrize("weights, target", [((1, 2), "regions"), ((1, -1, 1), "regions"), ((0, 0, 0), "regions"),
                                             ((1, 2, 1), "classes")])
def test_region_weights_that_do_not_fit_the_target_are_refused(weights, target):
    with pytest.raises(ValueError, match="region"):
        targets.training_loss("dice_ce", target, challenges.get("brats2020"), weights)


@pytest.mark.parametrize("name", ["class_dice_ce", "class_ce", "class_dice", "region_dice_ce"])
def test_every_loss_of_an_empty_batch_is_zero(name):
    # A replica whose share of the validation split ran out (MultiWorkerMirroredStrategy) scores an empty
    # batch, and TensorFlow's CPU conv3d returns its input there: the U-Net's output has the last hidden
    # layer's 8 channels.  The loss must be 0, not a shape error or a NaN that poisons the epoch's val_loss.
    membership = regions.decoding(challenges.get("brats2020")).membership().tolist()
    loss = (losses.region_loss("dice_ce", membership) if name.startswith("region")
            else losses.get_loss(name.removeprefix("class_")))
    run = tf.function(lambda y, p: loss(y, p), input_signature=[tf.TensorSpec([None, None, None, None, 4]),
                                                                tf.TensorSpec([None, None, None, None, None])])
    assert float(run(tf.zeros((0, 40, 48, 48, 4)), tf.zeros((0, 40, 48, 48, 8)))) == 0.0
    y = _one_hot(np.random.default_rng(2).integers(0, 4, size=(1, 8, 8, 8)), 4)
    right = regions.decoding(challenges.get("brats2020")).to_regions(y.argmax(-1)) if name.startswith("region") else y
    assert 0.0 <= float(run(y, right.astype(np.float32))) < 1e-3  # a batch with a patient is scored as before


def test_sigmoid_region_dice_thresholds_each_channel():
    challenge = challenges.get("brats2020")
    classes = np.array([[0, 1, 2, 3]])
    y = _one_hot(classes, 4)
    # ET channel right on the ET voxel and wrong on the oedema voxel: Dice 2*1 / (2 + 1)
    probs = np.zeros((1, 4, 3), np.float32)
    probs[0, 3, 2] = probs[0, 2, 2] = 0.8
    found = {m.name: m for m in metrics.region_training_metrics(challenge)}
    found["dice_et"].update_state(y, probs)
    assert float(found["dice_et"].result()) == pytest.approx(2 / 3)
    found["dice_mean"].update_state(y, probs)  # WT, TC empty in prediction: 0; ET 2/3
    assert float(found["dice_mean"].result()) == pytest.approx((0 + 0 + 2 / 3) / 3)


def test_deep_supervision_trains_on_every_output_and_saves_one(tmp_path):
    challenge = challenges.get("brats2020")
    spec = targets.model_spec(model_lib.preset("tiny"), "regions", challenge)
    net = targets.compiled_model((None, None, None, 2), spec, "regions", challenge, "dice_ce",
                                 keras.optimizers.Adam(1e-3), deep_supervision=True)
    outputs = net.network(np.zeros((1, 16, 16, 16, 2), np.float32))
    assert [o.shape[1] for o in outputs] == [16, 8]
    assert sum(model_lib.supervision_weights(3)) == pytest.approx(1.0)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 16, 2)).astype(np.float32)
    y = _one_hot(np.random.default_rng(1).integers(0, 4, size=(2, 16, 16, 16)), 4)
    logs = net.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and "dice_wt" in logs
    net.save(tmp_path / "model.keras")
    served = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert len(served.outputs) == 1 and served.output_shape[-1] == 3
    assert targets.model_target(served) == "regions"
    np.testing.assert_allclose(served.predict_on_batch(x), net.network.predict_on_batch(x)[0], atol=1e-5)


def test_to_classes_of_a_class_model_is_the_argmax():
    probs = np.array([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]])
    np.testing.assert_array_equal(inference.to_classes(probs), [1, 0])


def test_an_unknown_target_fails_before_training(tiny_dataset, tmp_path):
    cfg = override(tiny_cpu.get_config(), {"data_dir": tiny_dataset.dataset_dir, "target": "labels"})
    with pytest.raises(training.LaunchError, match="unknown target 'labels'"):
        training.train_and_evaluate(cfg, str(tmp_path), echo=lambda *_: None)


@pytest.mark.slow  # about a minute on 2 cores: graph tracing of training, validation and inference
def test_a_region_model_trains_saves_and_predicts_labels(tiny_dataset, tmp_path):
    cfg = override(tiny_cpu.get_config(), {
        "data_dir": tiny_dataset.dataset_dir, "patch_size": (16, 16, 16), "epochs": 1, "steps_per_epoch": 2,
        "target": "regions", "deep_supervision": True})
    outcome = training.train_and_evaluate(cfg, str(tmp_path), echo=lambda *_: None)
    assert {"val_dice_wt", "val_dice_tc", "val_dice_et", "val_dice_mean"} <= set(outcome.val_metrics)
    assert json.loads((tmp_path / "lineage.json").read_text())["target"] == "regions"
    predictor = predictor_lib.load_predictor(outcome.model_path, window="volume")
    assert len(predictor.model.outputs) == 1 and predictor.decoding.names == ("WT", "TC", "ET")
    rows, failures = scoring.score_model(predictor, tiny_dataset.dataset_dir, "val", echo=lambda *_: None)
    assert rows and not failures and all(0.0 <= r["dice_WT"] <= 1.0 for r in rows)


def _region_stub(channels: int = 4):
    """WT, TC, ET sigmoids of the stub's flair rule: region probabilities everywhere inside the crop."""
    image = keras.Input((None, None, None, channels), name="image")
    logits = keras.layers.Conv3D(3, 1, name="logits")(image)
    out = keras.layers.Activation("sigmoid", dtype="float32", name=model_lib.OUTPUT_NAMES["sigmoid"])(logits)
    model = keras.Model(image, out, name="region_stub")
    weights = np.zeros((1, 1, 1, channels, 3), np.float32)
    weights[0, 0, 0, 0] = [4.0, 2.0, 1.0]  # flair drives every region, with different steepness
    model.get_layer("logits").set_weights([weights, np.array([0.5, -0.5, -1.0], np.float32)])
    return model


def test_saved_region_probabilities_say_every_region_absent_outside_the_crop(stub_model, tiny_cohort, tmp_path):
    """A region model's sigmoids are not a softmax: outside the crop every region is absent (0), and no
    channel is 'certain'.  The Beam path once kept them as a softmax (channel 0 set to 1 outside the
    crop, i.e. WT certain everywhere outside the brain box); it must write what the local path writes."""
    import shutil

    from serving import batch_predict
    from tests.helpers import IN_PROCESS

    run = tmp_path / "run"
    shutil.copytree(stub_model.parent, run)
    _region_stub().save(run / "model.keras")
    folders = [str(sorted(tiny_cohort.iterdir())[0])]
    written = {}
    for where in ("local", "beam"):
        options = batch_predict.Options(str(run / "model.keras"), str(tmp_path / where), pictures=False,
                                        save_probabilities=True)
        if where == "local":
            summary = batch_predict.predict_local(options, folders, echo=lambda *_: None)
        else:
            summary = batch_predict.predict_beam(options, folders, IN_PROCESS)
        assert not summary.failures, summary.failures
        with np.load(summary.predicted[0]["files"]["probabilities"]) as f:
            written[where] = f["probabilities"].astype(np.float32)
    local = written["local"]
    predictor = predictor_lib.load_predictor(str(run / "model.keras"))
    source, convention = inputs.source_from_folder(folders[0], predictor)
    box = prediction.prepare(predictor, source, convention).record.crop_box
    outside = np.ones(local.shape[:3], bool)
    outside[tuple(slice(lo, hi) for lo, hi in box)] = False
    assert outside.any() and (local[~outside] > 0.5).any(), "the test needs voxels outside the crop and regions inside"
    assert np.all(local[outside] == 0.0)
    np.testing.assert_array_equal(written["beam"], local)
