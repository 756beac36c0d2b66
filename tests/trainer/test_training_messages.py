"""What a short training prints (issue 24): no Keras warnings that do not apply, the cohort's own names."""

from __future__ import annotations

import warnings

from configs.train import tiny_cpu
from trainer import train, training


def test_a_short_training_warns_neither_ran_out_of_data_nor_shuffle(tiny_dataset, tmp_path):
    cfg = tiny_cpu.get_config()
    cfg.data_dir = tiny_dataset.dataset_dir
    cfg.patch_size = (16, 16, 16)
    cfg.epochs, cfg.steps_per_epoch = 1, 1
    cfg.inference_choice.enabled = False
    printed = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = training.train_and_evaluate(cfg, str(tmp_path / "run"), echo=printed.append)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "ran out of data" in m or "shuffle=True" in m], messages
    assert "val_dice_wt" in outcome.val_metrics  # validation still ran over the val patients
    assert any("channels flair,t1,t1ce,t2" in line for line in printed)


def test_the_done_line_names_every_region_the_model_was_scored_on():
    gli2024 = {"val_loss": 0.9, "val_dice_wt": 0.5, "val_dice_tc": 0.4, "val_dice_et": 0.3, "val_dice_rc": 0.2,
               "val_dice_mean": 0.35}
    assert train.validation_dice(gli2024) == "WT 0.500, TC 0.400, ET 0.300, RC 0.200, mean 0.350"


def test_training_names_a_gli_2024_cohorts_channels_by_its_file_tokens():
    import types

    info = types.SimpleNamespace(challenge="brats2024_gli", channels=("flair", "t1", "t1ce", "t2"))
    assert training._channel_names(info) == "t2f,t1n,t1c,t2w"
