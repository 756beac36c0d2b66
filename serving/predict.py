r"""Segment patients from their raw NIfTI scans with a trained model.

    python -m serving.predict --model=runs/exp1/model.keras \
        --input=/data/BraTS20_Validation_001 --output_dir=preds/
    python -m serving.predict --model=runs/exp1/model.keras \
        --input='/data/MICCAI_BraTS2020_ValidationData/BraTS20_*' --output_dir=preds/ --tta=all

A whole cohort on Beam (add Dask or Dataflow options as for preprocessing):
    python -m serving.predict --model=... --input='/data/Validation/*' --output_dir=preds/ \
        --beam --runner=FnApiRunner --direct_running_mode=multi_processing --direct_num_workers=0

An ensemble (the folds of a cross-validation run, or repeated --model):
    python -m serving.predict --model=runs/cv --input='/data/Validation/*' --output_dir=preds/ \
        --tta=all --save_probabilities

For each patient: <id>.nii.gz (labels in the source's numbering, source affine
and header), <id>.json (region volumes in mL), <id>.png (three slices through
the tumour) and <id>.gif (axial fly-through); with --save_probabilities also
<id>.npz.  Post-processing a cross-validation run chose (postprocessing.json)
is applied.  Failures go to errors.jsonl.
Flags this module does not define are handed to Beam's PipelineOptions.
"""

from absl import app, flags

from shared import cli, console, detection
from serving import batch_predict, inference, inputs, predictor as predictor_lib
from serving.models import ModelError

_MODEL = flags.DEFINE_multi_string(
    "model", None, "Trained model (.keras) in its training workdir (lineage.json beside it), a run folder, or a "
    "cross-validation workdir (all its fold_<k> models). Repeat it for an ensemble: the models' softmax "
    "probabilities are averaged; they must share challenge, preprocessing and dataset version.")
_SAVE_PROBABILITIES = flags.DEFINE_boolean(
    "save_probabilities", False, "Also write <id>.npz: the (ensemble's) softmax probabilities before "
    "post-processing, float16 (X, Y, Z, classes) in the source grid, compressed.")
_POSTPROCESSING = flags.DEFINE_string(
    "postprocessing", "auto", "Post-processing rules: 'auto' (the postprocessing.json a cross-validation run "
    "chose, found with the models), 'none', or the path of a postprocessing.json.")
_INPUT = flags.DEFINE_list("input", None, "Patient folder(s) or glob(s), comma-separated.")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Folder for segmentations, volumes, pictures and errors.jsonl.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Dataset version the model was trained on, when lineage.json's path is not reachable "
    "from here (its manifest holds the preprocessing to repeat).")
_TTA = flags.DEFINE_enum("tta", None, inference.TTA_MODES,
                         "Flip test-time augmentation: none, axes (4 passes) or all (8 passes). Default: the "
                         "run's recorded best (inference.json, chosen on its validation split), else none.")
_OVERLAP = flags.DEFINE_float("overlap", 0.5, "Overlap of sliding windows, in [0, 1).")
_WINDOW = flags.DEFINE_string(
    "window", None, "Sliding window: 'patch' (the training patch size, as nnU-Net), 'volume' (the whole "
    "cropped volume in one pass, as the trainer's validation) or X,Y,Z voxels (XxYxZ too). Default: the run's recorded "
    "best (inference.json, chosen on its validation split), else 'patch'.")
_PICTURES = flags.DEFINE_boolean("pictures", True, "Write the PNG summary and the GIF fly-through.")
_BEAM = flags.DEFINE_boolean("beam", False, "Run on a Beam runner (pass --runner=... and its options).")
_ALLOW_OTHER = flags.DEFINE_boolean(
    "allow_other_challenge", False, "Segment folders whose file names identify a challenge whose labels mean "
    "other tissues than the model's (a PED case for a GLI model), written in the model's numbering; without it "
    "they are refused, naming both numberings.")
_STRICT = flags.DEFINE_boolean("strict", False, "Exit non-zero if any patient fails.")
flags.mark_flags_as_required(["model", "input", "output_dir"])


def main(argv):
    console.configure_logging()
    model_path = _MODEL.value[0] if len(_MODEL.value) == 1 else tuple(_MODEL.value)
    settings = predictor_lib.inference_settings(model_path, _WINDOW.value, _TTA.value)
    options = batch_predict.Options(
        model_path=model_path,
        output_dir=_OUTPUT.value, data_dir=_DATA_DIR.value, window=settings.window,
        tta=settings.tta, overlap=_OVERLAP.value, pictures=_PICTURES.value,
        save_probabilities=_SAVE_PROBABILITIES.value, postprocessing=_POSTPROCESSING.value,
        allow_other_challenge=_ALLOW_OTHER.value)
    try:
        folders = inputs.resolve_inputs(_INPUT.value)
        predictor = options.load()
    except (FileNotFoundError, ValueError, ModelError) as exc:
        cli.fail(exc)
    models = (options.model_path if len(predictor.model_paths) < 2
              else f"an ensemble of {len(predictor.model_paths)} models ({', '.join(predictor.model_paths)})")
    rules = (f", post-processing {predictor.postprocessing_path}" if predictor.postprocessing else "")
    print(f"Predicting {len(folders)} patient(s) with {models} (dataset version "
          f"{predictor.version_id}, window {predictor_lib.window_text(predictor.window)}, TTA {options.tta} "
          f"({settings.source}){rules})")
    print(f"Challenge: {predictor.challenge.title} (the model's; labels written as "
          f"{detection.numbering(predictor.challenge.name)} unless a folder's names fix another numbering with the "
          "same classes)" + (", --allow_other_challenge" if _ALLOW_OTHER.value else ""))
    if _BEAM.value:
        summary = batch_predict.predict_beam(options, folders, argv[1:])
    else:
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments {argv[1:]} (Beam options need --beam)")
        summary = batch_predict.predict_local(options, folders, predictor=predictor)
    print(batch_predict.format_summary(summary, options.output_dir))
    cli.exit_for_failures(len(summary.predicted), len(summary.failures), _STRICT.value, "predicted")


if __name__ == "__main__":
    cli.run(main, known_only=True)
