r"""k-fold cross-validation: train every fold, score them, choose post-processing.

    python -m trainer.cross_validate --config=configs/train/unet3d.py --workdir=runs/cv \
        --data_dir=/data/datasets/brats2020/<version_id>

The dataset needs folds (preprocess with --config.split.num_folds=5).  Writes
runs/cv/fold_0 .. fold_<k-1> (ordinary training runs, resumable), then
runs/cv/cross_validation/ (per-patient validation scores of every fold and
the mean over folds per region) and runs/cv/postprocessing.json.

On a cluster, run each fold as its own job and summarise afterwards:
    python -m trainer.train --config=... --config.fold=3 --workdir=runs/cv/fold_3
    python -m trainer.cross_validate --workdir=runs/cv --train=false
"""

from absl import app, flags

from shared import cli
from evaluation import cross_validation as scoring_folds  # wired here: scoring the folds (import contract)
from evaluation import inference_choice
from serving import inference
from trainer import cross_validation, training

_CONFIG = cli.DEFINE_config_file(
    "config", "configs/train/unet3d.py",
    "Training config file (get_config()); fields can be overridden as --config.field=value.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Cross-validation directory: fold_<k>/ runs, summary, post-processing.")
_FOLDS = flags.DEFINE_list("folds", None, "Folds to train (default: all).")
_TRAIN = flags.DEFINE_boolean("train", True, "Train the folds (false: only summarise the finished ones).")
_SUMMARIZE = flags.DEFINE_boolean("summarize", True, "Once every fold has a model: score them and choose "
                                  "post-processing.")
_TTA = flags.DEFINE_enum("tta", "none", inference.TTA_MODES, "Flip test-time augmentation when scoring the folds.")
_STRICT = flags.DEFINE_boolean("strict", False, "Exit non-zero if any validation patient of a fold could not be "
                               "scored.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset version directory to train the folds on (sets "
                                "--config.data_dir).")
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.set_config_field(_CONFIG.value, "data_dir", _DATA_DIR.value)
    try:
        if _TRAIN.value:
            inference_choice.check_options(_CONFIG.value)
            folds = [int(k) for k in _FOLDS.value] if _FOLDS.value else None
            cross_validation.train_folds(_CONFIG.value, _WORKDIR.value, folds,
                                         after_training=inference_choice.after_training)
        if not _SUMMARIZE.value:
            return
        missing = scoring_folds.missing_folds(_WORKDIR.value)
        if missing:
            print(f"Fold(s) {missing} not trained yet: summarise after they are "
                  f"(python -m trainer.cross_validate --workdir={_WORKDIR.value} --train=false)")
            return
        summary = scoring_folds.summarize(_WORKDIR.value, tta=_TTA.value)
    except (training.LaunchError, ValueError, FileNotFoundError) as exc:
        cli.fail(exc)
    print(scoring_folds.format_summary(summary))
    cli.exit_for_failures(len(summary.rows), len(summary.failures), _STRICT.value, "scored")


if __name__ == "__main__":
    cli.run(main)
