r"""Any challenge of the registry (shared/challenges.py), with its own defaults.

    python -m beam_pipeline.preprocess --config=configs/preprocess/challenge.py:brats2024_gli \
        --input=/data/BraTS2024-GLI-Training --output_dir=/data/datasets \
        --runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=0

The part after the colon names the challenge; it sets the dataset name, the
naming and label numbering (``layout``), the modalities the challenge ships,
its default crop (160x192x160 around the brain; ``--config.crop.mode=fixed`` for the seeds' box) and
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
    c.crop.mode = entry.crop["mode"]
    if entry.crop["mode"] == "fixed":
        c.crop.box = entry.crop["box"]
    else:
        c.crop.size = entry.crop["size"]
    c.resample.enabled = entry.grid.native
    return c
