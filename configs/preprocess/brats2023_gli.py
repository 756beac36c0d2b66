r"""BraTS 2023 glioma (``BraTS-GLI-00000-000`` folders, t1n/t1c/t2w/t2f, ET is label 3).

Modalities keep the project's names: flair=t2f, t1=t1n, t1ce=t1c, t2=t2w.

    python -m beam_pipeline.preprocess --config=configs/preprocess/brats2023_gli.py \
        --input=/data/ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData --output_dir=/data/datasets \
        --runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=0
"""

from configs.preprocess import default


def get_config():
    c = default.get_config()
    c.name = "brats2023_gli"
    c.layout = "brats2023_gli"
    return c
