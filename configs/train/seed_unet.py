r"""The seed projects' model and recipe: 5-level U-Net 16->256, Adam 1e-3, 144^3 volumes.

    python -m trainer.train --config=configs/train/seed_unet.py --workdir=runs/seed \
        --config.data_dir=/data/datasets/brats2020/<version_id>

The seeds trained on whole 144^3 crops of three channels (flair, t1ce, t2):
preprocess with --config.modalities=flair,t1ce,t2 to match them exactly.
"""

from configs.train import unet3d


def get_config():
    c = unet3d.get_config()
    c.model.preset = "seed"
    c.patch_size = (144, 144, 144)
    c.batch_size = 2
    c.epochs = 100
    c.optimizer.schedule = "constant"
    c.loss = "ce"
    c.augment.foreground_share = 0.0
    c.augment.flips = False
    c.augment.intensity_scale = 0.0
    c.augment.intensity_shift = 0.0
    for name in ("rotate_p", "scale_p", "elastic_p", "noise_p", "blur_p", "brightness_p", "contrast_p", "lowres_p",
                 "gamma_p"):
        c.augment[name] = 0.0  # the seeds did not augment
    return c
