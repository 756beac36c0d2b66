r"""Defaults shared by every preprocessing config (BraTS 2020 layout, 4 channels).

    python -m beam_pipeline.preprocess --config=configs/preprocess/default.py \
        --input=/data/MICCAI_BraTS2020_TrainingData --output_dir=/data/datasets

Any field can be overridden on the command line, e.g.
``--config.modalities=flair,t1ce,t2`` for the seeds' three channels.
Every field except ``runtime`` enters the dataset's version id.
"""

import ml_collections

from shared import challenges


def get_config():
    c = ml_collections.ConfigDict()
    c.name = "brats2020"  # datasets land in <output_dir>/<name>/<version_id>/
    c.layout = "brats2020"  # the challenge: naming, labels, regions (shared/challenges.py; challenge.py sets it)
    c.modalities = ("flair", "t1", "t1ce", "t2")  # channel order of the image
    c.require_seg = True  # False for unlabelled (validation) cohorts
    c.brain_mask = "nonzero"  # nonzero | ants_get_mask
    c.min_brain_voxels = 1000  # fewer non-zero voxels: "empty brain" failure

    # N4 with fewer, shorter fitting levels than antspyx's defaults
    # (4 x 50 iterations, tol 1e-7), fitted on every 8th voxel per axis (the
    # field is a smooth B-spline with a few control points; preprocessing/n4.py
    # shrinks, fits, and interpolates the log field back): better bias recovery
    # than the seed recipe on BraTS-like data at a tenth of the cost;
    # benchmarks/bench_preprocess.py measures both.
    c.n4 = ml_collections.ConfigDict()
    c.n4.enabled = True
    c.n4.shrink_factor = 8
    c.n4.iterations = (20, 20, 20)
    c.n4.tolerance = 1e-4
    c.n4.spline_mesh = 1

    # Native-space cohorts (MEN-RT, MET 2025 additions) come at any shape and
    # spacing: resample every scan to `spacing` mm before cropping; prediction
    # writes the segmentation back on the source grid.
    c.resample = ml_collections.ConfigDict()
    c.resample.enabled = False
    c.resample.spacing = (1.0, 1.0, 1.0)

    # bbox (default): the brain's bounding box (the non-zero voxels of every
    # channel) grown by `margin` voxels on each side, then symmetrically to a
    # multiple of `multiple` and to at least `min_size`, as nnU-Net crops to the
    # non-zero region: every tumour voxel in the brain stays in the record
    # whatever the head's size or position, and records differ in shape per
    # patient (the trainer pads one smaller than its patch, as nnU-Net does).
    # margin 8: a tumour voxel at the brain's edge keeps 8 voxels of context
    # (background) around it.  multiple 16: what a U-Net of depth 5 halves 4
    # times (the trainer refuses a deeper one), so validation and the "volume"
    # window run on a whole record.  min_size 64^3: a depth-5 U-Net's bottleneck
    # still sees 4^3 voxels on the smallest record; BraTS brains (about
    # 140x170x140) are far larger, so it only applies to partial-coverage scans.
    # brain: a box of `size` centred on the brain's bounding box, one shape for
    # every record: 160x192x160 holds a BraTS brain on 240x240x155 with a margin.
    # fixed: `box` on the source grid, the seeds' 144^3 box, which cuts tumour at
    # the brain's edge (--config.crop.mode=fixed reproduces the seeds).
    c.crop = ml_collections.ConfigDict()
    # The values are the registry's (shared/challenges.py), defined there once.
    c.crop.mode = "bbox"  # bbox | brain | fixed | centered (= brain, the older name)
    c.crop.margin = challenges.BBOX_CROP["margin"]  # 8 voxels around the brain's bounding box (mode bbox)
    c.crop.multiple = challenges.BBOX_CROP["multiple"]  # 16: every record dim a multiple of it (mode bbox)
    c.crop.min_size = challenges.BBOX_CROP["min_size"]  # 64^3: smallest record shape (mode bbox)
    c.crop.box = challenges.SEED_BOX["box"]  # the seeds' 48:192 x 48:192 x 5:149 on 240x240x155 (mode fixed)
    c.crop.size = challenges.BRAIN_BOX["size"]  # 160x192x160: the record shape (modes brain and centered)

    c.split = ml_collections.ConfigDict()
    c.split.val_fraction = 0.2
    c.split.seed = 42
    c.split.num_folds = 0  # >1: k-fold assignment of training patients in the manifest

    c.shards = ml_collections.ConfigDict()
    c.shards.target_mb = 256.0  # raw record bytes per shard; far below the 1 GiB limit
    # GZIP (.tfrecord.gz): 3.6x smaller files.  NONE (.tfrecord): no inflate when
    # reading, which makes the training input pipeline about 2.5x faster on the CPU
    # (benchmarks/bench_input.py); use it where disk is cheap and CPUs are scarce.
    c.shards.compression = "GZIP"  # GZIP | NONE

    c.runtime = ml_collections.ConfigDict()  # not fingerprinted
    # Run patients in a subprocess so a native crash in N4 becomes a dead letter.
    # The subprocess comes from a forkserver (pipeline.use_forkserver): forking
    # the gRPC-threaded SDK worker itself sometimes died (grpc/grpc#37642).
    # Costs each worker a few seconds once (BUILD_NOTES: runtime.isolate).
    c.runtime.isolate = True
    c.runtime.timeout_s = 1800  # per patient, with isolate; 0 disables
    return c
