"""Tests for the trainer's model builder, losses and Dice metrics (fast: tiny shapes)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from shared import challenges  # noqa: E402
from shared import labels  # noqa: E402

NUM_CLASSES = 4


def one_hot(classes):
    return labels.one_hot(classes, NUM_CLASSES)


GLI = challenges.get("brats2023_gli")  # classes 1 NETC, 2 SNFH, 3 ET
WT, TC, ET = (1, 2, 3), (1, 3), (3,)
from trainer import losses, metrics, model  # noqa: E402

SEED_PARAMS = 5_645_828


def _volume(shape=(1, 4, 4, 4), seed=0):
    """Random class volume and its float32 one-hot."""
    classes = np.random.default_rng(seed).integers(0, NUM_CLASSES, shape)
    return classes, one_hot(classes).astype(np.float32)


# --- model -----------------------------------------------------------------


def test_seed_preset_has_the_seed_parameter_count():
    net = model.build_unet((144, 144, 144, 3), model.preset("seed"))
    assert net.count_params() == SEED_PARAMS


def test_seed_preset_layout():
    spec = model.preset("seed")
    assert [spec.filters(i) for i in range(spec.depth)] == [16, 32, 64, 128, 256]
    net = model.build_unet((32, 32, 32, 3), spec)
    rates = [layer.rate for layer in net.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [0.1, 0.1, 0.2, 0.2, 0.3, 0.2, 0.2, 0.1, 0.1]
    assert not any("norm" in layer.name for layer in net.layers)


@pytest.mark.parametrize("name", model.PRESETS)
def test_presets_forward_pass_gives_probabilities(name):
    net = model.build_unet((None, None, None, 4), model.preset(name))
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 32, 4)).astype(np.float32)
    y = np.asarray(net(x, training=False))
    assert y.shape == (1, 32, 32, 32, 4)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        {"upsampling": "upsample_conv"},
        {"normalization": "group"},
        {"normalization": "batch", "activation": "elu"},
    ],
)
def test_variants_build_and_run(overrides):
    spec = model.spec_from_config({"preset": "tiny", "base_filters": 4, **overrides})
    net = model.build_unet((16, 16, 16, 3), spec)
    y = net(np.zeros((1, 16, 16, 16, 3), np.float32))
    assert tuple(y.shape) == (1, 16, 16, 16, 4)


def _conv_names(net):
    return [layer.name for layer in net.layers if isinstance(layer, keras.layers.Conv3D)
            and not isinstance(layer, keras.layers.Conv3DTranspose) and not layer.name.endswith("logits")]


def test_one_full_resolution_conv_drops_only_the_second_unit_of_the_full_resolution_blocks():
    two = model.build_unet((16, 16, 16, 4), model.preset("tiny"))
    one = model.build_unet((16, 16, 16, 4), model.spec_from_config({"preset": "tiny", "full_resolution_convs": 1}))
    dropped = set(_conv_names(two)) - set(_conv_names(one))
    assert dropped == {"enc0_b_conv", "dec0_b_conv"}
    assert set(_conv_names(one)) < set(_conv_names(two))
    y = np.asarray(one(np.zeros((1, 16, 16, 16, 4), np.float32)))
    assert y.shape == (1, 16, 16, 16, 4)
    with pytest.raises(ValueError, match="full_resolution_convs"):
        model.UNetSpec(full_resolution_convs=3)


def test_group_norm_uses_at_most_eight_dividing_groups():
    spec = model.spec_from_config({"preset": "tiny", "base_filters": 4, "normalization": "group"})
    net = model.build_unet((16, 16, 16, 3), spec)
    groups = {layer.groups for layer in net.layers if isinstance(layer, keras.layers.GroupNormalization)}
    assert groups == {4, 8}


def test_output_stays_float32_under_mixed_precision():
    tf = pytest.importorskip("tensorflow")
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = model.build_unet((16, 16, 16, 4), model.preset("tiny"))
        assert net.get_layer("logits").compute_dtype == "float16"
        assert keras.backend.standardize_dtype(net.outputs[0].dtype) == "float32"
        # TF has no float16 MaxPool3D CPU kernel; XLA has one on every device.
        forward = tf.function(lambda x: net(x, training=False), jit_compile=True)
        y = forward(np.zeros((1, 16, 16, 16, 4), np.float32))
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        np.testing.assert_allclose(np.asarray(y).sum(axis=-1), 1.0, atol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_check_patch_size_names_patch_and_depth():
    model.check_patch_size((32, 32, 32), 3)
    model.check_patch_size((36, 36, 36), 3)
    with pytest.raises(ValueError, match=r"\(30, 32, 32\).*depth 3"):
        model.check_patch_size((30, 32, 32), 3)
    with pytest.raises(ValueError, match="depth 5"):
        model.build_unet((144, 144, 136, 4), model.preset("seed"))  # 136 % 16 != 0


def test_spec_from_config_and_errors():
    spec = model.spec_from_config({"preset": "nnunet", "dropout": [0.0] * 5})
    assert spec.normalization == "instance" and spec.dropout == (0.0,) * 5
    assert model.spec_from_config({}) == model.preset("seed")
    with pytest.raises(ValueError, match="normalisation"):
        model.spec_from_config({"normalisation": "batch"})
    with pytest.raises(ValueError, match="preset"):
        model.preset("huge")
    with pytest.raises(ValueError, match="activation"):
        model.UNetSpec(activation="gelu")


def test_spec_from_config_accepts_config_dict():
    ml_collections = pytest.importorskip("ml_collections")
    cfg = ml_collections.ConfigDict({"preset": "tiny", "upsampling": "upsample_conv"})
    assert model.spec_from_config(cfg).upsampling == "upsample_conv"


def test_the_cpu_recipes_depth_can_be_set_from_the_command_line_and_is_the_presets_otherwise():
    """The recipes' base config (unet3d.py) names the depth, so the locked config a flag override writes to has
    the field (BUILD_NOTES' depth-4 probe: --config.model.depth=4); left alone it is the preset's own, whichever
    preset."""
    import dataclasses

    from configs.train import tiny_cpu

    cfg = tiny_cpu.get_config()
    assert model.spec_from_config(cfg.model) == dataclasses.replace(model.preset("tiny"), full_resolution_convs=1)
    assert model.spec_from_config({**cfg.model.to_dict(), "preset": "nnunet"}).depth == model.preset("nnunet").depth
    cfg.lock()  # as config_flags hands it to overrides: a field the file lacks cannot be set
    cfg.model.depth = 4
    deeper = model.spec_from_config(cfg.model)
    assert deeper.depth == 4 and deeper.base_filters == model.preset("tiny").base_filters


# --- losses ----------------------------------------------------------------


def test_perfect_prediction_has_near_zero_loss():
    _, y = _volume()
    assert float(losses.soft_dice_loss(y, y)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.cross_entropy_loss(y, y)) == pytest.approx(0.0, abs=1e-5)


def test_uniform_prediction_costs_more():
    _, y = _volume()
    uniform = np.full_like(y, 1.0 / NUM_CLASSES)
    assert float(losses.soft_dice_loss(y, uniform)) > 0.4
    assert float(losses.cross_entropy_loss(y, uniform)) == pytest.approx(np.log(NUM_CLASSES), rel=1e-5)


def test_dice_matches_hand_computation():
    y_true = np.zeros((1, 2, 1, 1, 4), np.float32)
    y_true[0, 0, 0, 0, 1] = 1
    y_true[0, 1, 0, 0, 0] = 1
    y_pred = np.zeros_like(y_true)
    y_pred[0, :, 0, 0, 1] = 0.5
    y_pred[0, :, 0, 0, 0] = 0.5
    # class 1: I=0.5, T=1, P=1 -> 0.5; classes 2, 3 empty -> 1 (smoothed)
    expected = 1 - np.mean([0.5, 1.0, 1.0])
    assert float(losses.soft_dice_loss(y_true, y_pred, smooth=1e-9)) == pytest.approx(expected, rel=1e-5)


def test_dice_ce_is_the_sum():
    _, y = _volume(seed=1)
    p = np.random.default_rng(2).dirichlet(np.ones(NUM_CLASSES), size=y.shape[:-1]).astype(np.float32)
    total = float(losses.dice_ce_loss(y, p))
    assert total == pytest.approx(float(losses.soft_dice_loss(y, p)) + float(losses.cross_entropy_loss(y, p)), rel=1e-6)


def test_float16_inputs_give_finite_float32():
    _, y = _volume(shape=(2, 64, 64, 32))  # 262k voxels: float16 sums would overflow
    p = np.full(y.shape, 0.25, np.float16)
    for name in losses.LOSS_NAMES:
        value = losses.get_loss(name)(y.astype(np.uint8), p)
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
        assert np.isfinite(float(value))


def test_get_loss_rejects_unknown_name():
    with pytest.raises(ValueError, match="dice_ce"):
        losses.get_loss("focal")


# --- metrics ---------------------------------------------------------------


def _hand_volumes():
    """Truth and prediction as class volumes over 8 voxels (one batch item)."""
    truth = np.array([0, 1, 1, 2, 2, 3, 3, 0]).reshape(1, 2, 2, 2)
    pred = np.array([0, 1, 3, 2, 0, 3, 1, 2]).reshape(1, 2, 2, 2)
    return one_hot(truth), one_hot(pred).astype(np.float32)


def _region(members):
    return metrics.RegionDice(members, name="dice_x", num_classes=NUM_CLASSES)


def _mean():
    return metrics.MeanRegionDice({"WT": WT, "TC": TC, "ET": ET}, num_classes=NUM_CLASSES)


def _result(metric, y_true, y_pred):
    metric.update_state(y_true, y_pred)
    return float(metric.result())


def test_region_and_class_dice_match_hand_values():
    y_true, y_pred = _hand_volumes()
    # WT: truth {1..6}, pred {1,2,3,5,6,7}: I=5 -> 10/12
    assert _result(_region(WT), y_true, y_pred) == pytest.approx(10 / 12)
    # TC: truth {1,2,5,6}, pred {1,2,5,6}: perfect
    assert _result(_region(TC), y_true, y_pred) == pytest.approx(1.0)
    # ET: truth {5,6}, pred {2,5}: I=1 -> 2/4
    assert _result(_region(ET), y_true, y_pred) == pytest.approx(0.5)
    assert _result(_mean(), y_true, y_pred) == pytest.approx((10 / 12 + 1 + 0.5) / 3)
    # necrotic: truth {1,2}, pred {1,6}: 2/4; edema: truth {3,4}, pred {3,7}: 2/4
    assert _result(_region((1,)), y_true, y_pred) == pytest.approx(0.5)
    assert _result(_region((2,)), y_true, y_pred) == pytest.approx(0.5)
    assert _result(_region((3,)), y_true, y_pred) == pytest.approx(0.5)


def test_metric_names_follow_the_challenge():
    names = [m.name for m in metrics.training_metrics(GLI)]
    assert names == ["dice_wt", "dice_tc", "dice_et", "dice_mean", "patient_dice_mean", "dice_netc", "dice_snfh",
                     "accuracy"]
    names = [m.name for m in metrics.training_metrics(challenges.get("brats2020"))]
    assert names == ["dice_wt", "dice_tc", "dice_et", "dice_mean", "patient_dice_mean", "dice_ncr", "dice_ed",
                     "accuracy"]
    names = [m.name for m in metrics.training_metrics(challenges.get("brats2024_gli"))]
    assert names[:8] == ["dice_wt", "dice_tc", "dice_et", "dice_netc", "dice_snfh", "dice_rc", "dice_mean",
                         "patient_dice_mean"]
    gtv = metrics.training_metrics(challenges.get("brats2024_men_rt"))
    assert [m.name for m in gtv] == ["dice_gtv", "dice_mean", "patient_dice_mean", "accuracy"]
    assert gtv[0].num_classes == 2


def test_both_empty_gives_one():
    background = one_hot(np.zeros((1, 2, 2, 2), np.int64))
    for metric in (_region(ET), _region((1,)), _mean()):
        assert _result(metric, background, background.astype(np.float16)) == 1.0


def test_accumulation_equals_one_call_on_concatenation():
    (_, t1), (_, p1) = _volume(seed=3), _volume(seed=4)
    (_, t2), (_, p2) = _volume(seed=5), _volume(seed=6)
    for make in (lambda: _region(TC), lambda: _region((2,)), _mean):
        split, joint = make(), make()
        split.update_state(t1, p1)
        split.update_state(t2, p2)
        joint.update_state(np.concatenate([t1, t2]), np.concatenate([p1, p2]))
        assert float(split.result()) == pytest.approx(float(joint.result()))
        split.reset_state()
        assert float(split.result()) == 1.0


def test_class_outside_the_model_rejected():
    with pytest.raises(ValueError, match="outside 0..3"):
        _result(_region((4,)), *_hand_volumes())


# --- training ----------------------------------------------------------------


def test_tiny_model_fits_with_dice_ce_and_metrics():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 16, 16, 16, 4)).astype(np.float32)
    y = one_hot(rng.integers(0, NUM_CLASSES, (2, 16, 16, 16)))  # uint8, as on disk
    net = model.build_unet((16, 16, 16, 4), model.preset("tiny"))
    net.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.get_loss("dice_ce"),
                metrics=metrics.training_metrics(GLI))
    history = net.fit(x, y, batch_size=1, epochs=3, steps_per_epoch=1, verbose=0)
    for name in ("loss", "dice_wt", "dice_tc", "dice_et", "dice_mean", "dice_snfh", "accuracy"):
        assert name in history.history, sorted(history.history)
        assert len(history.history[name]) == 3
        assert all(np.isfinite(history.history[name]))


def test_saved_model_reloads_with_loss_and_metrics(tmp_path):
    net = model.build_unet((16, 16, 16, 4), model.preset("tiny"))
    net.compile(optimizer="adam", loss=losses.dice_ce_loss, metrics=metrics.training_metrics(GLI))
    x = np.zeros((1, 16, 16, 16, 4), np.float32)
    y = one_hot(np.zeros((1, 16, 16, 16), np.int64))
    net.evaluate(x, y, verbose=0)  # builds the compiled metrics
    net.optimizer.build(net.trainable_variables)  # so its (empty) state is saved too
    path = tmp_path / "tiny.keras"
    net.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(net(x)), atol=1e-6)
    assert "dice_mean" in again.evaluate(x, y, verbose=0, return_dict=True)
