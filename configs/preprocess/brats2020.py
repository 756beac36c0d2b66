r"""BraTS 2020 training data (official .nii.gz or the Kaggle mirror's .nii).

    python -m beam_pipeline.preprocess --config=configs/preprocess/brats2020.py \
        --input=/data/MICCAI_BraTS2020_TrainingData --output_dir=/data/datasets \
        --runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=0

Seeds' three channels: add ``--config.modalities=flair,t1ce,t2``.
"""

from configs.preprocess import default


def get_config():
    return default.get_config()
