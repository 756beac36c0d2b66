r"""BraTS 2021 (1251 cases, ``BraTS2021_00000`` folders, labels 0/1/2/4, no grades).

    python -m beam_pipeline.preprocess --config=configs/preprocess/brats2021.py \
        --input=/data/BraTS2021_Training_Data --output_dir=/data/datasets \
        --runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=0
"""

from configs.preprocess import default


def get_config():
    c = default.get_config()
    c.name = "brats2021"
    c.layout = "brats2021"
    return c
