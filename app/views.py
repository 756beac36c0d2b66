"""What the page shows of a result or a model: slice pictures, tables, legend and sidebar text.

Why a module of its own: these are pure functions from a
:class:`app.session.Result` (or a loaded model) to numbers, pictures and
strings, so what the user reads can be tested without Streamlit; the page
(``app/streamlit_app.py``) only puts them into widgets.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from app.session import Result
from shared import challenges
from shared.spec import PreprocessingSpec

MODALITY_TITLES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce (contrast)", "t2": "T2"}

WINDOWS = {"patch": "training patch (as nnU-Net)", "volume": "whole crop in one pass"}


def table_rows(challenge: challenges.Challenge) -> list[tuple[str, str]]:
    """(row title, structure key) for the volumes table: each label, then each region that is not a label."""
    rows = [(f"{label.title} ({label.key})", label.key) for label in challenge.labels]
    keys = {label.key for label in challenge.labels}
    for region, values in challenge.regions.items():
        if region not in keys:
            members = " + ".join(challenge.labels[challenge.class_of(v) - 1].key for v in values)
            rows.append((f"{region} = {members}", region))
    return rows


def volumes_table(result: Result) -> list[dict[str, object]]:
    """One row per label and region: volume in mL, and with a truth its volume, Dice and HD95."""
    volumes = result.prediction.volumes_ml
    rows = []
    for title, key in table_rows(result.prediction.challenge):
        row: dict[str, object] = {"Region": title, "Volume (mL)": round(volumes[key], 2)}
        if result.scores is not None:
            row["True volume (mL)"] = round(result.scores[f"volume_truth_{key}_ml"], 2)
            row["Dice"] = round(result.scores[f"dice_{key}"], 3)
            row["HD95 (mm)"] = round(result.scores[f"hd95_{key}"], 2)
        rows.append(row)
    return rows


def lesion_rows(result: Result) -> list[dict[str, object]]:
    """The lesion-wise table (one row per region) as the leaderboards score it, when a truth was given."""
    if result.lesions is None:
        return []
    names = {"dice": "Lesion Dice", "hd95": "Lesion HD95 (mm)", "tp": "TP", "fp": "FP", "fn": "FN",
             "f1": "F1", "nsd": "NSD", "pq": "PQ"}
    rows = []
    for entry in result.lesions["regions"]:
        row: dict[str, object] = {"Region": entry["region"]}
        for key, title in names.items():
            if key in entry:
                value = entry[key]
                row[title] = int(value) if key in ("tp", "fp", "fn") else round(float(value), 3)
        rows.append(row)
    return rows


def default_centre(result: Result) -> tuple[int, int, int]:
    from serving import pictures

    return pictures.tumour_centre(result.classes)


def view_images(result: Result, modality: str, centre: Sequence[int], show: Sequence[int] | None = None,
                alpha: float = 0.45, size: int = 360) -> dict[str, np.ndarray]:
    """Axial, coronal and sagittal RGB slices through ``centre`` with the overlay.

    Radiological layout (as :mod:`serving.pictures` draws it), scaled so the
    longer side is ``size`` pixels at the voxels' physical aspect ratio.
    """
    from PIL import Image

    from serving import pictures

    spacing = result.prediction.spacing
    slices = pictures.orthogonal_slices(result.images[modality], result.classes, centre, result.prediction.affine)
    out = {}
    for view, (image, classes) in slices.items():
        rgb = pictures.overlay_rgb(image, classes, result.prediction.challenge,
                                   show=None if show is None else tuple(show), alpha=alpha)
        _, row, col = pictures.VIEWS[view]
        height, width = rgb.shape[0] * float(spacing[row]), rgb.shape[1] * float(spacing[col])
        scale = size / max(height, width)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        out[view] = np.asarray(Image.fromarray(rgb).resize(target, Image.Resampling.NEAREST))
    return out


def class_titles(challenge: challenges.Challenge) -> dict[int, str]:
    """Class -> the label's name, for the page's toggles."""
    return {cls: f"{label.title} ({label.key})" for cls, label in enumerate(challenge.labels, start=1)}


def legend_html(challenge: challenges.Challenge, show: Sequence[int] | None = None) -> str:
    """The overlay legend as inline HTML (coloured squares in the overlay's RGB), named as the challenge names them."""
    from serving import pictures

    show = range(1, challenge.num_classes) if show is None else show
    titles = class_titles(challenge)
    items = []
    for cls, _, rgb in pictures.legend_entries(challenge):
        style = "opacity:0.3;" if cls not in show else ""
        items.append(f'<span style="{style}margin-right:1.2em;white-space:nowrap">'
                     f'<span style="display:inline-block;width:0.9em;height:0.9em;background:rgb{rgb};'
                     f'border:1px solid #888;vertical-align:middle;margin-right:0.35em"></span>'
                     f"{titles[cls]}</span>")
    return "".join(items)


def inference_defaults(model_path: str) -> tuple[str, str, str]:
    """(window, TTA, a sentence saying why) preselected in the sidebar for a model.

    The run's recorded best on its validation split (``inference.json``),
    else the training patch without TTA.  Which window is better depends on
    the model (the demo's tiny model: the whole crop by 0.10 WT Dice), so the
    page follows the measurement rather than one fixed rule.
    """
    from serving import predictor as predictor_lib

    settings = predictor_lib.inference_settings(model_path)
    recorded = predictor_lib.recorded_inference(model_path)
    if recorded is None:
        return settings.window, settings.tta, (
            "No window/TTA choice recorded for this model: training patch, no TTA. Record one with "
            f"`python -m evaluation.choose_inference --model={model_path}`.")
    scores = ", ".join(f"{c['window']}/{c['tta']} {c['patient_dice_mean']:.3f}" for c in recorded.candidates)
    return settings.window, settings.tta, (
        f"Preselected: the best window/TTA on the run's {recorded.patients} validation patient(s), by mean "
        f"per-patient Dice ({scores}).")


def upload_limit_text(upload_mb: int, volume_mb: int) -> str:
    """The caption under the uploaders: one limit, said once (Streamlit's own "per file" text rounds
    anything over 512 MB up to 1GB, so past that the caption says which figure holds)."""
    rounded = " (the uploader rounds it up to 1GB per file)" if upload_mb > 512 else ""
    return (f"At most {upload_mb} MB in all{rounded}, and each volume at most {volume_mb} MB once read. Files are "
            "kept in a temporary folder only while they are segmented.")


def short_model_name(path: str) -> str:
    """``run/model.keras`` (the run folder and file) for the sidebar, which cuts long paths."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    return "/".join(parts[-2:])


def model_summary(predictor) -> str:
    """A line on what the model expects, for the sidebar."""
    from serving import predictor as predictor_lib

    crop_text = PreprocessingSpec.from_config(predictor.preprocess_cfg).describe_crop()
    entry = predictor.challenge
    return (f"Trained on {entry.title}: labels {', '.join(entry.class_keys[1:])}. "
            f"Modalities {', '.join(predictor.channels)}; crop {crop_text}; window "
            f"{predictor_lib.window_text(predictor.window)}; trained on dataset {predictor.version_id} "
            f"({predictor.layout} naming). {geometry_text(predictor)}")


def geometry_text(predictor) -> str:
    """What scans the model takes: skull-stripped, co-registered, and the training geometry it checks."""
    expected = predictor.expected
    grid = predictor.challenge.grid
    if expected.recorded and (expected.grids or expected.resample_mm is not None):  # the model's own grid, once
        rule = ("another spacing is resampled" if expected.resample_mm is not None else "another grid is refused")
        return (f"Scans must be skull-stripped and on this model's grid: {expected.describe()} (its training "
                f"scans); another orientation is reoriented, {rule}.")
    atlas = ("in native space (any grid)" if grid.native
             else f"on the {grid.name} grid ({'x'.join(map(str, grid.shape))} at "
                  f"{'x'.join(f'{s:g}' for s in grid.spacing_mm)} mm)")
    return f"Scans must be skull-stripped and {atlas}, as the challenge distributes them (training grid not recorded)."
