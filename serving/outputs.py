"""What a prediction leaves on disk: the segmentation, its report, the probabilities and the pictures.

The last step of a prediction (:mod:`serving.prediction` makes the
:class:`~serving.prediction.Prediction`, this writes it): kept apart so the
per-patient work never writes files itself, and the app can take the bytes
without writing anything.
"""

from __future__ import annotations

import io
import json
import posixpath
from typing import TYPE_CHECKING

import numpy as np

from shared import labels
from shared.nifti_io import nifti_bytes
from shared.storage import write_bytes

if TYPE_CHECKING:
    from serving.prediction import Prediction
    from serving.predictor import Predictor


def segmentation_bytes(prediction: Prediction) -> bytes:
    """The segmentation as ``.nii.gz`` bytes: source affine and header, uint8 labels."""
    header = prediction.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1, 0)
    return nifti_bytes(prediction.stored_labels.astype(np.uint8), prediction.affine, header=header)


def volumes_report(prediction: Prediction, predictor: Predictor | None = None) -> dict:
    """The JSON written beside a segmentation: volumes and where it came from."""
    report = {
        "patient_id": prediction.patient_id,
        "volumes_ml": {k: round(v, 3) for k, v in prediction.volumes_ml.items()},
        "voxel_spacing_mm": list(prediction.spacing),
        "challenge": prediction.challenge.name,
        "label_convention": prediction.label_convention,
        "labels": dict(zip(labels.class_keys(prediction.label_convention),
                           labels.stored_values(prediction.label_convention))),
        "seconds": {k: round(v, 3) for k, v in prediction.seconds.items()},
        "source_files": {k: posixpath.basename(v) for k, v in prediction.source_files.items()},
        "geometry_notes": list(prediction.notes),
    }
    if predictor is not None:
        report.update(predictor.provenance)
    return report


def probabilities_bytes(prediction: Prediction) -> bytes:
    """``<id>.npz``: the softmax (source grid, float16, ``(X, Y, Z, K)``) and what its classes are."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, probabilities=prediction.probabilities.astype(np.float16),
                        class_keys=np.array(prediction.challenge.class_keys), affine=prediction.affine)
    return buffer.getvalue()


def write_pictures(prediction: Prediction, output_dir: str) -> dict[str, str]:
    """``<id>.png`` (a summary) and ``<id>.gif`` (a fly-through) of the segmentation over the scan."""
    from serving import pictures as pics  # matplotlib is only needed here

    pid = prediction.patient_id
    paths = {"png": posixpath.join(output_dir, f"{pid}.png"), "gif": posixpath.join(output_dir, f"{pid}.gif")}
    write_bytes(paths["png"], pics.summary_png(prediction.display, prediction.classes, prediction.challenge,
                                               prediction.spacing, title=pid, affine=prediction.affine))
    write_bytes(paths["gif"], pics.flythrough_gif(prediction.display, prediction.classes, prediction.challenge,
                                                  spacing=prediction.spacing, affine=prediction.affine))
    return paths


def write_outputs(prediction: Prediction, output_dir: str, predictor: Predictor | None = None,
                  pictures: bool = True) -> dict[str, str]:
    """Write ``<id>.nii.gz`` (BraTS submission naming), ``<id>.json``, the pictures and ``<id>.npz`` (probabilities, when kept)."""
    pid = prediction.patient_id
    paths = {"segmentation": posixpath.join(output_dir, f"{pid}.nii.gz"),
             "volumes": posixpath.join(output_dir, f"{pid}.json")}
    write_bytes(paths["segmentation"], segmentation_bytes(prediction))
    write_bytes(paths["volumes"], (json.dumps(volumes_report(prediction, predictor), indent=2) + "\n").encode())
    if prediction.probabilities is not None:
        paths["probabilities"] = posixpath.join(output_dir, f"{pid}.npz")
        write_bytes(paths["probabilities"], probabilities_bytes(prediction))
    if pictures:
        paths.update(write_pictures(prediction, output_dir))
    return paths
