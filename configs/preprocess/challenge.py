r"""Any challenge of the registry (shared/challenges.py), with its own defaults.

    python -m beam_pipeline.preprocess --config=configs/preprocess/challenge.py:brats2024_gli \
        --input=/data/BraTS2024-GLI-Training --output_dir=/data/datasets \
        --runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=0

The part after the colon names the challenge; it sets the dataset name, the
naming and label numbering (``layout``), the modalities the challenge ships,
its default crop (the brain's bounding box + 8 voxels, a multiple of 16; ``--config.crop.mode=fixed`` for the
seeds' box, ``--config.crop.mode=brain`` for one 160x192x160 shape around the brain) and
resampling to 1 mm for native-space challenges (MEN-RT).  Several cohorts
with compatible labels go into one dataset by repeating ``--input``.
"""

from configs.preprocess import default
from shared import challenges


def get_config(challenge: str = "brats2020"):
    entry = challenges.get(challenge or "brats2020")
    c = default.get_config()
    c.name = entry.name
    c.layout = entry.name
    c.modalities = entry.modalities
    for field, value in entry.crop.items():  # mode, and its parameters (bbox: margin...; fixed: box; brain: size)
        c.crop[field] = value
    c.resample.enabled = entry.grid.native
    return c
