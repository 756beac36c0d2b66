"""List the dataset versions under an output directory and what differs between them.

    python -m beam_pipeline.versions --output_dir=/data/datasets
"""

from absl import app, flags

from beam_pipeline import catalog
from shared import cli, storage

_OUTPUT = flags.DEFINE_string("output_dir", None, "The --output_dir given to beam_pipeline.preprocess.")
flags.mark_flag_as_required("output_dir")


def main(argv):
    del argv
    if not storage.exists(_OUTPUT.value):
        cli.fail(f"--output_dir: {storage.folder_problem(_OUTPUT.value)} (pass the --output_dir given to preprocess)")
    print(catalog.format_versions(_OUTPUT.value))


if __name__ == "__main__":
    cli.run(main)
