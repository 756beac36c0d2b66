r"""Score segmentations with the BraTS metrics (Dice, HD95, sensitivity, specificity, volumes).

A trained model on a split of its dataset version, each patient predicted from its raw scans as
serving.predict does and scored in its own space (the same numbers as predict + --pred_dir):
    python -m evaluation.evaluate --model=runs/exp1/model.keras \
        --data_dir=/data/datasets/brats2020/<version_id> --split=val --output_dir=runs/exp1/eval
    (--input=/data/MICCAI_BraTS2020_TrainingData when the folder the dataset was made from has moved;
     --space=cropped scores the records' cropped grid instead: faster, no raw scans, blind outside the crop)

The ensemble of a cross-validation run's folds on the held-out val split (repeat --model for others):
    python -m evaluation.evaluate --model=runs/cv --split=val

NIfTI predictions of any tool against BraTS ground truth (any release's layout):
    python -m evaluation.evaluate --pred_dir=preds/ --truth_dir=/data/MICCAI_BraTS2020_TrainingData

Either with another scoring scheme (default: the challenge's own; see evaluation/schemes.py):
    python -m evaluation.evaluate --pred_dir=preds/ --truth_dir=... --scheme=brats2026

Writes scores.csv (per patient), lesions.csv (per lesion), summary.json and errors.jsonl,
and prints the whole-region and lesion-wise tables with the scheme they follow.
"""

import os

from absl import app, flags

from shared import cli, console, storage
from evaluation import schemes
from shared import challenges
from evaluation import scoring
from serving import inference, predictor as predictor_lib
from serving.models import ModelError

_MODEL = flags.DEFINE_multi_string(
    "model", None, "Trained model (.keras), run folder or cross-validation workdir (all its folds) to evaluate "
    "on --data_dir's --split; repeat it to evaluate an ensemble (mean softmax of the models).")
_POSTPROCESSING = flags.DEFINE_string(
    "postprocessing", "auto", "Post-processing for --model: 'auto' (the postprocessing.json found with the "
    "models), 'none', or the path of a postprocessing.json.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset version directory (default: the one the model "
                                "was trained on, from its lineage.json).")
_SPLIT = flags.DEFINE_string("split", "val", "Split of the dataset to score (val or train).")
_PRED_DIR = flags.DEFINE_string("pred_dir", None, "Folder of NIfTI predictions (<patient>.nii.gz or "
                                "<patient>_seg.nii.gz) to score against --truth_dir.")
_TRUTH_DIR = flags.DEFINE_string("truth_dir", None, "BraTS cohort root with one folder per patient and its seg file.")
_CHALLENGE = flags.DEFINE_enum("challenge", None, list(challenges.CHALLENGES),
                               "Challenge of --truth_dir: its naming, labels and regions (default: detected from "
                               "the folder names; GLI 2023 and GLI 2024 share names, so pass it for GLI 2024).")
cli.deprecated_alias("layout", "challenge")
_PRED_CONVENTION = flags.DEFINE_enum("pred_convention", None, list(challenges.CONVENTIONS),
                                     "Label numbering of the predictions (default: the ground truth's).")
_WINDOW = flags.DEFINE_string(
    "window", None, "Sliding window for --model: 'patch' (training patch size), 'volume' (whole cropped "
    "volume, as the trainer's validation) or X,Y,Z voxels (XxYxZ too). Default: the run's recorded best "
    "(inference.json), else 'patch'.")
_TTA = flags.DEFINE_enum("tta", None, inference.TTA_MODES, "Flip test-time augmentation for --model. "
                         "Default: the run's recorded best (inference.json), else none.")
_INPUT = flags.DEFINE_list("input", None, "For --model: the raw cohort folder(s) the dataset was preprocessed "
                           "from (default: the folder its run.json records).")
_SPACE = flags.DEFINE_enum("space", "source", ["source", "cropped"], "For --model: score each patient in its "
                           "own space from its raw scans, as predict + --pred_dir would ('source'), or the "
                           "records' cropped grid ('cropped': no raw scans or N4, but tumour outside the crop "
                           "box is not counted).")
_SCHEME = flags.DEFINE_enum(
    "scheme", None, list(schemes.SCHEMES),
    "Scoring scheme: brats2020 (whole-region, max-directed HD95), nnunet (whole-region, pooled HD95), brats2023 "
    "/ brats2024 (lesion-wise Dice and HD95 with the challenge's dilation, threshold and penalty), brats2026 "
    "(the 2026 leaderboard as the official package computes it: matched lesions' F1, Dice, HD95, NSD, PQ and "
    "whole-region Dice, HD95, NSD), brats2026_corrected (the same with the voxel spacing applied correctly). "
    "Default: the challenge's own.")
_STRICT = flags.DEFINE_boolean("strict", False, "Exit non-zero if any patient could not be scored (a patient of "
                               "--truth_dir without a prediction counts).")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Where the reports go (default: <model dir>/eval_<split>, "
                              "or <pred_dir>/evaluation).")


def _by_model():
    models = _MODEL.value[0] if len(_MODEL.value) == 1 else list(_MODEL.value)
    settings = predictor_lib.inference_settings(models, _WINDOW.value, _TTA.value)
    predictor = predictor_lib.load_predictor(models, _DATA_DIR.value, settings.window,
                                          postprocessing=_POSTPROCESSING.value)
    data_dir = predictor.data_dir
    if data_dir is None:
        raise FileNotFoundError(f"the dataset {predictor.model_path} was trained on is not reachable from here: "
                                "pass --data_dir=<its dataset version directory>")
    output = _OUTPUT.value or scoring.default_output(_MODEL.value, _SPLIT.value)
    print(f"Scoring {predictor.model_path} on the {_SPLIT.value} split of {data_dir}"
          + (f" (ensemble of {len(predictor.model_paths)})" if len(predictor.model_paths) > 1 else "")
          + f", window {predictor_lib.window_text(predictor.window)}, TTA {settings.tta} ({settings.source}), "
          + ("in each patient's own space" if _SPACE.value == "source" else "on the records' cropped grid"))
    about = {"model": predictor.model_path, "models": list(predictor.model_paths), "data_dir": data_dir,
             "version_id": predictor.version_id, "split": _SPLIT.value, "tta": settings.tta,
             "window": list(predictor.window), "inference_settings": settings.source, "space": _SPACE.value,
             "postprocessing": list(predictor.postprocessing), "postprocessing_file": predictor.postprocessing_path}
    if predictor.decoding is not None:  # a region model: say why its numbers differ from training's
        about["region_decoding"] = predictor.decoding.explain()
        print(about["region_decoding"])
    if _SPACE.value == "source":
        inputs = scoring.cohort_folders(data_dir, _INPUT.value)
        about["input"] = inputs
        rows, failures = scoring.score_model_in_source_space(predictor, data_dir, _SPLIT.value, inputs,
                                                                tta=settings.tta, scheme=_SCHEME.value)
    else:
        rows, failures = scoring.score_model(predictor, data_dir, _SPLIT.value, tta=settings.tta,
                                                scheme=_SCHEME.value)
    return rows, failures, output, about, predictor.challenge


def _by_folders():
    for flag, folder in (("pred_dir", _PRED_DIR.value), ("truth_dir", _TRUTH_DIR.value)):
        if problem := storage.folder_problem(folder):  # a misspelling reads as one, not as "no patients"
            raise FileNotFoundError(f"--{flag}: {problem}")
    output = _OUTPUT.value or os.path.join(_PRED_DIR.value, "evaluation")
    print(f"Scoring the segmentations in {_PRED_DIR.value} against {_TRUTH_DIR.value}")
    notes: list[str] = []
    rows, failures, challenge = scoring.score_folders(_PRED_DIR.value, _TRUTH_DIR.value, _CHALLENGE.value,
                                                         _PRED_CONVENTION.value, scheme=_SCHEME.value, notes=notes)
    return rows, failures, output, {"pred_dir": _PRED_DIR.value, "truth_dir": _TRUTH_DIR.value,
                                    "notes": notes}, challenge


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    console.configure_logging()
    if bool(_MODEL.value) == bool(_PRED_DIR.value):
        raise app.UsageError("pass either --model (with its dataset) or --pred_dir with --truth_dir")
    if _PRED_DIR.value and not _TRUTH_DIR.value:
        raise app.UsageError("--pred_dir needs --truth_dir")
    try:
        rows, failures, output, about, challenge = _by_model() if _MODEL.value else _by_folders()
    except (FileNotFoundError, ValueError, ModelError) as exc:
        cli.fail(exc)
    report = scoring.write_report(rows, failures, output, about, challenge, _SCHEME.value,
                                  notes=about.get("notes"))
    print(scoring.format_report(report))
    cli.exit_for_failures(len(rows), len(failures), _STRICT.value, "scored")


if __name__ == "__main__":
    cli.run(main)
