r"""A tiny U-Net that trains on CPU in minutes (demo and tests).

    python -m trainer.train --config=configs/train/tiny_cpu.py --workdir=runs/tiny \
        --config.data_dir=demo_data/datasets/synthetic/<version_id>
"""

from configs.train import unet3d


def get_config():
    c = unet3d.get_config()
    c.model.preset = "tiny"
    c.patch_size = (32, 32, 32)
    c.batch_size = 2
    c.epochs = 8
    c.steps_per_epoch = 25
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "cosine"
    c.precision = "float32"
    c.augment.foreground_share = 0.5
    c.data.cache = True
    for name in ("rotate_p", "scale_p", "elastic_p", "noise_p", "blur_p", "brightness_p", "contrast_p", "lowres_p",
                 "gamma_p"):
        c.augment[name] = 0.0  # a CPU demo: the cheap crop path only
    return c
