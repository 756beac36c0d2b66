r"""Measure which sliding window and TTA segment best with a trained model, and record it in its run.

    python -m evaluation.choose_inference --model=runs/exp1/model.keras
    python -m evaluation.choose_inference --model=runs/exp1 --tta=none,axes,all

Training does this at its end (``--config.inference_choice.enabled``, on by
default); this command is for runs trained before, or to try other
candidates.  It writes ``inference.json`` beside the run's ``lineage.json``,
which ``serving.predict``, ``evaluation.evaluate --model`` and the app follow
when not given ``--window``/``--tta``.
"""

from absl import app, flags

from shared import cli, console
from evaluation import inference_choice
from serving import inference, predictor as predictor_lib
from serving.models import ModelError

_MODEL = flags.DEFINE_string("model", None, "Trained model (.keras) in its run folder, or the run folder.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Dataset version the model was trained on, when lineage.json's "
                                "path is not reachable from here.")
_WINDOWS = flags.DEFINE_list("windows", list(inference_choice.WINDOWS), "Candidate windows: patch, volume, X,Y,Z "
                             "(write sizes as XxYxZ here).")
_TTA = flags.DEFINE_list("tta", list(inference_choice.TTA_MODES), f"Candidate TTA modes ({', '.join(inference.TTA_MODES)}).")
flags.mark_flag_as_required("model")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    console.configure_logging()
    windows = [w.replace("x", ",") for w in _WINDOWS.value]
    try:
        path, _ = inference_choice.choose_and_write(predictor_lib.expand_models(_MODEL.value)[0], windows=windows,
                                                    tta_modes=_TTA.value, data_dir=_DATA_DIR.value)
    except (FileNotFoundError, ValueError, ModelError) as exc:
        cli.fail(exc)
    print(f"Recorded in {path}")


if __name__ == "__main__":
    cli.run(main)
