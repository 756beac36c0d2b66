r"""Train a 3D U-Net on a versioned BraTS TFRecord dataset.

    python -m trainer.train --config=configs/train/unet3d.py --workdir=runs/exp1 \
        --data_dir=/data/datasets/brats2020/<version_id> --config.batch_size=2

Re-running the same command after an interruption resumes from the last
finished epoch; re-running it after the run finished only says so (exit 0),
unless --config.continue_training=true.  With TF_CONFIG set, each worker runs this same command
(MultiWorkerMirroredStrategy).
"""

from absl import app, flags

from shared import cli
from evaluation import inference_choice  # wired here: the end-of-training window/TTA choice (import contract)
from trainer import training

_CONFIG = cli.DEFINE_config_file(
    "config", "configs/train/unet3d.py",
    "Training config file (get_config()); fields can be overridden as --config.field=value.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: config, lineage, checkpoints, logs, final model.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset version directory to train on (sets --config.data_dir).")
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.set_config_field(_CONFIG.value, "data_dir", _DATA_DIR.value)
    try:
        inference_choice.check_options(_CONFIG.value)
    except ValueError as exc:
        cli.fail(exc)
    try:
        outcome = training.train_and_evaluate(_CONFIG.value, _WORKDIR.value,
                                               after_training=inference_choice.after_training)
    except training.LaunchError as exc:
        cli.fail(exc)
    if outcome.already_finished:
        return  # train_and_evaluate said so; exit 0: the model the command asks for exists
    dice = validation_dice(outcome.val_metrics)
    print(f"Done: {outcome.epochs_run} epoch(s), model in {outcome.model_path}"
          + (f"; validation Dice {dice}" if dice else ""))


def validation_dice(val_metrics: dict) -> str:
    """'WT 0.812, TC 0.701, ET 0.655, RC 0.402, mean 0.723': every region the model was scored on.

    Read from the metrics themselves (``val_dice_<region>``), so a GLI 2024 run shows RC, and a
    challenge added to the registry shows its own regions, without a list here.
    """
    regions = [k for k in val_metrics if k.startswith("val_dice_") and k != "val_dice_mean"]
    parts = [f"{k[len('val_dice_'):].upper()} {val_metrics[k]:.3f}" for k in regions]
    if "val_dice_mean" in val_metrics:
        parts.append(f"mean {val_metrics['val_dice_mean']:.3f}")
    return ", ".join(parts)


if __name__ == "__main__":
    cli.run(main)
