r"""A tiny U-Net that trains on CPU in minutes (demo, tests and benchmarks/bench_science.py).

    python -m trainer.train --config=configs/train/tiny_cpu.py --workdir=runs/tiny \
        --config.data_dir=demo_data/datasets/synthetic/<version_id>

The recipe was chosen on a hard synthetic cohort at 240x240x155 (BUILD_NOTES.md,
"A recipe for hard cases"), within the CPU time the earlier recipe
(softmax classes, 8x25 steps, whole-volume validation every epoch) took there:
nnU-Net's region targets (WT/TC/ET sigmoids) with deep supervision, and the
time whole-volume validation took every epoch and test-time augmentation
took in the end-of-training choice spent on 8x the steps instead (it
validates at the end, and the choice compares windows without TTA), with
nnU-Net's random rotations and scaling; then twice those steps again, for
the CPU that parsing each full-size record once (``data.cache``) saved; then
one conv unit instead of two in the full-resolution blocks, whose CPU per
step (about a third less) buys 8x700 steps instead of 8x400. Prediction
mirrors every axis (TTA ``all``, set rather than scored: scoring it would
add 7 passes over each validation brain to the end of training).
"""

from configs.train import unet3d


def get_config():
    c = unet3d.get_config()
    c.model.preset = "tiny"
    c.model.full_resolution_convs = 1  # a third less CPU per step on 2 cores, spent on steps (BUILD_NOTES)
    c.patch_size = (32, 32, 32)
    c.batch_size = 2
    c.epochs = 8
    c.steps_per_epoch = 700  # 8x400 with two full-resolution convs; 8x800 fitted the budget with 1 % to spare
    c.val_every = 8  # whole-volume validation at the end only (it cost more than 25 steps per epoch at full size)
    c.target = "regions"  # WT/TC/ET sigmoids, as nnU-Net trains BraTS
    c.deep_supervision = True
    c.optimizer.learning_rate = 3e-3
    c.optimizer.schedule = "cosine"
    c.precision = "float32"
    c.augment.foreground_share = 0.5
    c.data.cache = True
    # the window and post-processing are chosen on 4 validation patients (the general default) without TTA:
    # TTA's 8 mirrored passes of each whole brain cost about what 8x100 steps did, and 2 patients (what the
    # earlier recipe afforded with TTA) let one patient's large false positive choose keep-largest
    c.inference_choice.tta = "none"
    # the whole-record window is not a candidate: these 32^3-patch models lost with it in every full-size run
    # (21 of 21, by 0.03 to 0.28 mean Dice) and on the demo, and scoring it cost a quarter of the choice
    c.inference_choice.windows = "patch"
    # prediction mirrors every axis (8 passes), as nnU-Net always does: on the tuning cohort it raised TC Dice on
    # 5 of 5 validation and 5 of 6 test patients; scoring it here would add 7 passes per validation brain (BUILD_NOTES)
    c.inference_choice.prediction_tta = "all"
    # nnU-Net's rotation (up to 30 degrees) and scaling (0.7-1.4) stay on, at its rates (0.2): on the tuning
    # cohort they raised every region's Dice at no measurable CPU cost; the rest is off (BUILD_NOTES)
    for name in ("elastic_p", "noise_p", "blur_p", "brightness_p", "contrast_p", "lowres_p", "gamma_p"):
        c.augment[name] = 0.0
    return c
