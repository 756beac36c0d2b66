r"""The default: an nnU-Net-style 3D U-Net (instance norm, leaky ReLU, 32->320 filters).

    python -m trainer.train --config=configs/train/unet3d.py --workdir=runs/exp1 \
        --config.data_dir=/data/datasets/brats2020/<version_id> --config.batch_size=2

Any field can be overridden as --config.field=value (e.g. --config.precision=float32).
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.data_dir = ""  # a dataset version directory written by beam_pipeline.preprocess (required)
    c.verify_data = True  # refuse a directory whose shards do not match its manifest

    c.model = ml_collections.ConfigDict()
    c.model.preset = "nnunet"  # seed | nnunet | tiny (trainer/model.py); other model fields override it
    c.model.depth = ml_collections.config_dict.placeholder(int)  # unset: the preset's; e.g. --config.model.depth=4
    c.patch_size = (128, 128, 128)  # each side divisible by 2**(depth-1)
    c.batch_size = 2
    c.epochs = 300
    c.steps_per_epoch = 250
    c.val_every = 1  # epochs between validations
    c.fold = -1  # k >= 0: cross-validation fold k of the manifest's folds validates, the others train; -1: none

    c.target = "classes"  # classes (softmax over labels) | regions (sigmoid per region, e.g. WT/TC/ET: nnU-Net's BraTS)
    c.loss = "dice_ce"  # ce | dice | dice_ce (with target=regions: binary CE, Dice over the regions)
    # with target=regions: each region's share of the loss, in the challenge's region order (e.g. (1, 2, 1) counts
    # TC twice for WT/TC/ET); () counts them equally, as nnU-Net does
    c.region_weights = ()
    c.deep_supervision = False  # auxiliary losses at 1/2, 1/4... resolution (training only; the saved model has one output)
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # adam | adamw | sgd
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "cosine"  # constant | cosine | polynomial
    c.optimizer.weight_decay = 0.0

    c.precision = "auto"  # auto (mixed_float16 on GPU, float32 on CPU) | float32 | mixed_float16 | mixed_bfloat16
    c.jit_compile = False  # XLA
    c.require_gpu = False  # exit before training if no GPU is visible
    c.seed = 0
    c.deterministic = False  # tf op determinism (slower)
    c.early_stopping_patience = 0  # epochs without a better val patient_dice_mean (per-patient mean); 0 disables
    c.continue_training = False  # a re-launch of a finished run trains on (to a larger epochs) instead of exiting
    # At the end, score the final model's sliding window (patch, volume) x TTA on the validation patients and
    # record the best in <workdir>/inference.json, which prediction, evaluation and the app then default to.
    c.inference_choice = ml_collections.ConfigDict()
    c.inference_choice.enabled = True
    c.inference_choice.windows = "patch,volume"
    c.inference_choice.tta = "none,all"  # of none | axes | all; TTA is tried on the best window only
    # a TTA mode (none | axes | all) prediction uses whatever was scored, recorded as set (tta_set_by);
    # "": the choice's
    c.inference_choice.prediction_tta = ""
    c.inference_choice.max_patients = 4  # validation patients scored (the first in manifest order)
    c.inference_choice.postprocessing = True  # choose component / small-ET rules too (postprocessing.json)

    c.augment = ml_collections.ConfigDict()
    c.augment.foreground_share = 0.33  # share of patches centred on tumour
    c.augment.foreground_pick = "voxel"  # voxel: any tumour voxel | class: a tumour class drawn first (nnU-Net); BUILD_NOTES
    c.augment.flips = True
    c.augment.rotation = False  # random 90-degree axial rotations
    c.augment.intensity_scale = 0.1  # per channel, +-
    c.augment.intensity_shift = 0.1
    c.augment.xla = True  # crop/flips/cast/intensity as one fused XLA kernel on the CPU (same patches, ~6x cheaper)
    # nnU-Net-style transforms: the probability each is applied to a patch (0 = off); ranges in trainer/augment.py AugmentConfig
    c.augment.rotate_p = 0.2  # any angle about each axis, up to +-rotate_max_deg
    c.augment.rotate_max_deg = 30.0
    c.augment.scale_p = 0.2
    c.augment.scale_range = (0.7, 1.4)
    c.augment.elastic_p = 0.0  # off, as in nnU-Net's 3d_fullres
    c.augment.elastic_magnitude = 4.0  # voxels
    c.augment.noise_p = 0.1
    c.augment.blur_p = 0.2
    c.augment.brightness_p = 0.15
    c.augment.contrast_p = 0.15
    c.augment.lowres_p = 0.25
    c.augment.gamma_p = 0.3

    c.data = ml_collections.ConfigDict()
    c.data.shuffle_buffer = 16
    c.data.cache = False  # parse the training records once and keep them in memory (small cohorts: ~40 MB a full-size patient)
    return c
