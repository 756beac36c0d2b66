r"""Preprocess a BraTS cohort (or several) into a versioned, sharded TFRecord dataset.

Any challenge of shared/challenges.py, e.g. BraTS 2024 GLI post-treatment:
    python -m beam_pipeline.preprocess --input=/data/BraTS2024-GLI \
        --output_dir=/data/datasets --config=configs/preprocess/challenge.py:brats2024_gli

Locally, on all cores:
    python -m beam_pipeline.preprocess --input=/data/MICCAI_BraTS2020_TrainingData \
        --output_dir=/data/datasets --config=configs/preprocess/brats2020.py \
        --runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=0

On Google Cloud Dataflow (see README.md, "Running on Dataflow"):
    python -m beam_pipeline.preprocess --input=gs://bucket/BraTS2020 \
        --output_dir=gs://bucket/datasets --config=configs/preprocess/brats2020.py \
        --runner=DataflowRunner --project=my-project --region=europe-west4 \
        --temp_location=gs://bucket/tmp --setup_file=./setup.py

Flags this module does not define are handed to Beam's PipelineOptions.
"""

from absl import app, flags

from beam_pipeline import launch
from shared import cli, console

_CONFIG = cli.DEFINE_config_file(
    "config", "configs/preprocess/brats2020.py", "Preprocessing config file (get_config()); "
    "fields can be overridden as --config.field=value.")
_INPUT = flags.DEFINE_multi_string(
    "input", None, "Cohort root folder holding one folder per patient (local or gs://). Repeat it to build one "
    "dataset from several cohorts whose labels mean the same classes (e.g. GLI 2023, SSA and MEN folders); "
    "each patient's cohort is recorded and the splits are stratified by it.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Where datasets go: <output_dir>/<name>/<version_id>/.")
_STRICT = flags.DEFINE_boolean("strict", False, "Exit non-zero if any patient fails.")
flags.mark_flags_as_required(["input", "output_dir"])


def main(beam_args):
    console.configure_logging()
    try:
        inputs = _INPUT.value[0] if len(_INPUT.value) == 1 else _INPUT.value
        summary = launch.run(_CONFIG.value.to_dict(), inputs, _OUTPUT.value, beam_args[1:])
    except (FileNotFoundError, ValueError, launch.NoPatientSucceeded, launch.JobNotFinished) as exc:
        cli.fail(exc)  # bad input, config or runner; or a job that left no manifest and said nothing
    print(launch.format_summary(summary))
    if _STRICT.value and summary.failures:
        raise SystemExit(f"--strict: {summary.failed_patients} patient(s) failed")


def parse_flags(argv):
    """absl takes its own flags; everything else goes on to Beam. Mistakes are one-line error exits."""
    return cli.parse_flags(argv, known_only=True)


if __name__ == "__main__":
    cli.run(main, known_only=True)
