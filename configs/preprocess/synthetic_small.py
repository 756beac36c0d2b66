r"""Small synthetic cohorts (demo and tests): volumes of any size, a small crop around the brain.

    python -m synthetic.generate --output_dir=/tmp/synth --num_patients=8 --shape=64,64,64
    python -m beam_pipeline.preprocess --config=configs/preprocess/synthetic_small.py \
        --input=/tmp/synth --output_dir=/tmp/datasets \
        --runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=0
"""

from configs.preprocess import default


def get_config():
    c = default.get_config()
    c.name = "synthetic"
    c.crop.mode = "brain"
    c.crop.size = (48, 48, 48)
    c.min_brain_voxels = 500
    c.n4.shrink_factor = 2  # a 32-64 voxel crop shrunk by 8 leaves too few voxels to fit a field
    c.runtime.isolate = False  # tiny volumes: spawning a subprocess costs more than the work
    return c
