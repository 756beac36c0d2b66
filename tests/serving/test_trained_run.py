"""The run contract (shared/trained_run.py): run folders as earlier trainers wrote them keep loading and predicting."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import pytest

from serving import batch_predict, predictor as predictor_lib
from shared import manifest as manifest_lib, trained_run
from tests.helpers import ROOT, build_stub_model

# Every key trainer/training.py's _check_lineage wrote into lineage.json before the run contract.
_LINEAGE_KEYS = {"data_dir", "version_id", "manifest_sha256", "channels", "num_train", "num_val", "challenge",
                 "label_convention", "num_classes", "target", "preprocess", "geometry", "fold", "num_folds",
                 "val_patients"}


def _legacy_run(root, dataset, inference: dict | None = None):
    """A run folder laid out exactly as the trainer wrote it before the run contract, byte for byte by hand."""
    found = manifest_lib.read_manifest(dataset.dataset_dir)
    root.mkdir()
    lineage = {"data_dir": str(dataset.dataset_dir), "version_id": found["version_id"],
               "manifest_sha256": manifest_lib.manifest_sha256(dataset.dataset_dir),
               "channels": list(found["config"]["modalities"]), "num_train": 4, "num_val": 2,
               "challenge": found["config"]["layout"], "label_convention": "brats2020", "num_classes": 4,
               "target": "classes", "preprocess": found["config"], "geometry": found.get("geometry"),
               "fold": None, "num_folds": None, "val_patients": None}
    (root / "lineage.json").write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n")
    (root / "config.json").write_text(json.dumps({"patch_size": [16, 16, 16], "precision": "float32"}, indent=2))
    if inference is not None:
        (root / "inference.json").write_text(json.dumps(inference, indent=2, sort_keys=True) + "\n")
    build_stub_model().save(root / "model.keras")
    return root


def test_a_run_folder_written_before_the_contract_loads_and_predicts(tiny_dataset, tiny_cohort, tmp_path):
    recorded = {"window": "volume", "tta": "none", "patients": 2, "split": "val",
                "candidates": [{"window": "volume", "tta": "none", "patient_dice_mean": 0.5}]}
    run_dir = _legacy_run(tmp_path / "run", tiny_dataset, recorded)
    run = trained_run.TrainedRun.read(str(run_dir))
    assert run.patch_size == (16, 16, 16) and run.precision == "float32" and run.fold is None
    assert run.lineage.channels == tuple(json.loads((run_dir / "lineage.json").read_text())["channels"])
    assert run.inference.window == "volume" and run.inference.patients == 2 and len(run.inference.candidates) == 1
    assert set(run.lineage.to_json()) == _LINEAGE_KEYS  # training writes the same keys it always did

    settings = predictor_lib.inference_settings(str(run_dir / "model.keras"))
    assert (settings.window, settings.tta) == ("volume", "none") and "inference.json" in settings.source
    options = batch_predict.Options(str(run_dir / "model.keras"), str(tmp_path / "out"), window=settings.window,
                                    pictures=False)
    predictor = options.load()
    assert predictor.runs[0].run_dir == str(run_dir) and predictor.data_dir == str(tiny_dataset.dataset_dir)
    folder = tiny_cohort / "BraTS20_Training_001"
    summary = batch_predict.predict_local(options, [str(folder)], echo=lambda *_: None, predictor=predictor)
    assert not summary.failures and len(summary.predicted) == 1
    written = nib.load(str(tmp_path / "out" / "BraTS20_Training_001.nii.gz"))
    source = nib.load(str(folder / "BraTS20_Training_001_flair.nii.gz"))
    assert written.shape == source.shape
    report = json.loads((tmp_path / "out" / "BraTS20_Training_001.json").read_text())
    assert report["dataset_version_id"] == run.lineage.version_id


def test_a_minimal_lineage_reads_with_the_rest_unrecorded(tmp_path):
    (tmp_path / "lineage.json").write_text(json.dumps({"data_dir": "/nowhere", "version_id": "v1"}))
    run = trained_run.TrainedRun.read(str(tmp_path))
    assert run.lineage.version_id == "v1" and run.lineage.target == "classes" and run.lineage.preprocess is None
    assert run.patch_size is None and run.inference is None and run.validation() == ("val", None)
    with pytest.raises(trained_run.RunError, match="--data_dir"):
        run.training_data()


def test_a_lineage_round_trips_through_its_json(tmp_path):
    lineage = trained_run.Lineage(version_id="v1", data_dir="/d", channels=("flair", "t1"), fold=1, num_folds=5,
                                  val_patients=("a", "b"), preprocess={"layout": "brats2020"})
    trained_run.write_lineage(str(tmp_path), lineage)
    assert trained_run.read_lineage(str(tmp_path)) == lineage
    assert json.loads((tmp_path / "lineage.json").read_text())["val_patients"] == ["a", "b"]
    assert trained_run.TrainedRun.read(str(tmp_path)).validation() == ("train", ["a", "b"])


def test_fold_folders_are_found_by_fold_number(tmp_path):
    for k in (10, 2, 0):
        (tmp_path / f"fold_{k}").mkdir()
        (tmp_path / f"fold_{k}" / trained_run.MODEL_FILE).write_bytes(b"")
    (tmp_path / "fold_x").mkdir()
    (tmp_path / "fold_x" / trained_run.MODEL_FILE).write_bytes(b"")
    found = trained_run.fold_models(str(tmp_path))
    assert found == [trained_run.model_file(trained_run.fold_dir(str(tmp_path), k)) for k in (0, 2, 10)]


def test_the_run_contract_imports_no_tensorflow():
    code = "import sys, shared.trained_run; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
