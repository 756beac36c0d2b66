"""Scan geometry against what the model was trained on (shared/geometry.py).

A scan stored in another orientation is reoriented on the way in and its
segmentation written back on its own grid and orientation; a scan at 2 mm is
resampled where the preprocessing resamples and refused, naming the file,
what it has and what the model expects, where it does not.  Tiny volumes, N4
off and the stub model (tests/conftest.py), which answers every class.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import nibabel as nib
import numpy as np
import pytest

from app import session, views
from app.uploads import InputError
from preprocessing.patient import PatientError
from evaluation import scoring
from serving import batch_predict, inputs, outputs, prediction, predictor as predictor_lib
from shared import geometry, layouts
from synthetic import cohort as synthetic_data
from tests.helpers import TINY_SHAPE, build_stub_model, run_pipeline, stub_classes, tiny_config

PID = "BraTS20_Training_001"
NUMBERING = {0: 0, 1: 1, 2: 2, 3: 4}  # classes -> BraTS 2020 labels
CHANNELS = ("flair", "t1", "t1ce", "t2", "seg")


def _config(resample: bool) -> dict:
    return tiny_config(**{"n4.enabled": False, "resample.enabled": resample})


@pytest.fixture(scope="module")
def scan():
    """One synthetic 48x48x40 patient at 1 mm in BraTS's LPS orientation: volumes and affine."""
    patient = synthetic_data.make_patient(PID, 1, TINY_SHAPE, "HGG", seed=3)
    return dict(patient.images, seg=patient.seg.astype(np.uint8)), patient.affine


def _write(root: pathlib.Path, volumes: dict, affine, pid: str = PID) -> pathlib.Path:
    """The patient's files in the BraTS 2020 naming under ``root/<pid>/``."""
    folder = root / pid
    folder.mkdir(parents=True)
    layout = layouts.get_layout("brats2020")
    for channel, array in volumes.items():
        (folder / layout.expected_name(pid, channel)).write_bytes(synthetic_data.nifti_bytes(array, affine))
    return folder


def _turned(volumes: dict, affine, codes: str):
    """The same scan stored in orientation ``codes``: arrays flipped (and swapped) and the affine with them,
    so every voxel keeps its world position."""
    turn = geometry.reorientation(affine, next(iter(volumes.values())).shape, codes)
    return {k: turn.forward(v) for k, v in volumes.items()}, turn.affine


def _at_2mm(volumes: dict, affine):
    """The scan at 2 mm: every second voxel along each axis, the affine's steps doubled."""
    coarse = {k: np.ascontiguousarray(v[::2, ::2, ::2]) for k, v in volumes.items()}
    return coarse, np.asarray(affine, np.float64) @ np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture(scope="module")
def stub_file(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("stub") / "model.keras"
    build_stub_model().save(path)
    return path


def _predictor(tmp_path, stub_file, resample: bool, scans: dict | None):
    """A run folder whose lineage.json carries the config and the training geometry (no dataset needed)."""
    run = tmp_path / f"run_{'resample' if resample else 'fixed'}"
    run.mkdir()
    shutil.copy(stub_file, run / "model.keras")
    lineage = {"version_id": "geometry-test", "preprocess": _config(resample), "geometry": scans}
    (run / "lineage.json").write_text(json.dumps(lineage))
    (run / "config.json").write_text(json.dumps({"patch_size": [16, 16, 16]}))
    return predictor_lib.load_predictor(str(run / "model.keras"))


def _trained_on(scan, resample: bool) -> dict:
    """The manifest entry of a dataset of scans like ``scan`` (LPS, 48x48x40 at 1 mm)."""
    volumes, affine = scan
    return geometry.summarize([geometry.ScanGeometry.of(affine, volumes["flair"].shape)], resample)


def _predict(predictor, folder: pathlib.Path, out: pathlib.Path):
    source, convention = inputs.source_from_folder(str(folder), predictor)
    pred = prediction.predict_patient(predictor, source, convention)
    paths = outputs.write_outputs(pred, str(out), predictor, pictures=False)
    return pred, nib.load(paths["segmentation"]), nib.load(source.files["flair"])


def _prepared(predictor, root: pathlib.Path):
    source, convention = inputs.source_from_folder(str(root / PID), predictor)
    return prediction.prepare(predictor, source, convention)


def test_reorientation_is_exact_both_ways_and_keeps_world_positions():
    shape = (5, 6, 7)
    affine = synthetic_data.brats_affine(shape)
    array = np.arange(np.prod(shape)).reshape(shape)
    stored = affine[:, [2, 0, 1, 3]]  # axes swapped: SLP
    turn = geometry.reorientation(stored, array.transpose(2, 0, 1).shape, "LPS")
    assert (turn.source, turn.target) == ("SLP", "LPS")
    np.testing.assert_array_equal(turn.forward(array.transpose(2, 0, 1)), array)
    np.testing.assert_array_equal(turn.backward(array), array.transpose(2, 0, 1))
    np.testing.assert_allclose(turn.affine, affine)
    probabilities = np.random.default_rng(0).random(shape + (4,))  # trailing class axis: turned with the voxels
    np.testing.assert_array_equal(turn.forward(turn.backward(probabilities)), probabilities)
    np.testing.assert_array_equal(turn.backward(probabilities)[..., 2], turn.backward(probabilities[..., 2]))
    assert geometry.reorientation(affine, shape, "LPS") is None


def test_a_scan_stored_in_ras_is_predicted_and_written_back_in_ras(scan, stub_file, tmp_path):
    volumes, affine = scan
    predictor = _predictor(tmp_path, stub_file, False, _trained_on(scan, False))
    ras_volumes, ras_affine = _turned(volumes, affine, "RAS")
    assert geometry.axcodes(ras_affine) == "RAS"
    _, lps_out, _ = _predict(predictor, _write(tmp_path / "lps", volumes, affine), tmp_path / "out_lps")
    pred, ras_out, ras_src = _predict(predictor, _write(tmp_path / "ras", ras_volumes, ras_affine), tmp_path / "out_ras")

    assert ras_out.shape == ras_src.shape
    np.testing.assert_array_equal(ras_out.affine, ras_src.affine)
    assert geometry.axcodes(ras_out.affine) == "RAS"
    written = np.asarray(ras_out.dataobj)
    assert set(np.unique(written).tolist()) == {0, 1, 2, 4}, "every label, under its BraTS 2020 number"
    back = geometry.reorientation(ras_out.affine, written.shape, "LPS").forward(written)
    np.testing.assert_array_equal(back, np.asarray(lps_out.dataobj))  # the same segmentation as stored as LPS
    assert any("orientation RAS" in note for note in pred.notes)
    # the network saw the RAS scan exactly as it sees the LPS one (a voxel-wise stub would hide a flip otherwise)
    records = [_prepared(predictor, tmp_path / codes).record for codes in ("lps", "ras")]
    np.testing.assert_array_equal(records[1].image, records[0].image)
    np.testing.assert_array_equal(records[1].affine, records[0].affine)
    report = json.loads((tmp_path / "out_ras" / f"{PID}.json").read_text())
    assert any("reoriented to the model's LPS" in note for note in report["geometry_notes"])


@pytest.mark.parametrize("codes", ["LPS", "RAS"])
def test_a_2mm_scan_is_resampled_where_the_preprocessing_resamples(scan, stub_file, tmp_path, codes):
    predictor = _predictor(tmp_path, stub_file, True, _trained_on(scan, True))
    volumes, affine = _turned(*_at_2mm(*scan), codes) if codes != "LPS" else _at_2mm(*scan)
    pred, out, src = _predict(predictor, _write(tmp_path / "in", volumes, affine), tmp_path / "out")

    assert out.shape == src.shape == (24, 24, 20)
    np.testing.assert_array_equal(out.affine, src.affine)
    assert geometry.axcodes(out.affine) == codes
    written = np.asarray(out.dataobj)
    assert set(np.unique(written).tolist()) == {0, 1, 2, 4}
    # what the stub answers on the 1 mm preprocessed image, uncropped, back at 2 mm and in the scan's orientation
    source, convention = inputs.source_from_folder(str(tmp_path / "in" / PID), predictor)
    prepared = prediction.prepare(predictor, source, convention)
    assert tuple(prepared.record.grid_shape) == TINY_SHAPE  # resampled to 1 mm (flips keep the axes' order)
    expected = prepared.grid.invert(stub_classes(prepared.record.image))
    assert (prepared.grid.reorientation is None) == (codes == "LPS")
    np.testing.assert_array_equal(written, np.vectorize(NUMBERING.get)(expected))
    assert any("resampled to the model's 1x1x1 mm" in note for note in pred.notes)


def test_a_2mm_scan_is_refused_where_the_preprocessing_does_not_resample(scan, stub_file, tmp_path):
    predictor = _predictor(tmp_path, stub_file, False, _trained_on(scan, False))
    folder = _write(tmp_path / "in", *_at_2mm(*scan))
    source, convention = inputs.source_from_folder(str(folder), predictor)
    with pytest.raises(PatientError) as caught:
        prediction.prepare(predictor, source, convention)
    error = caught.value
    assert error.stage == "geometry" and error.file == f"{PID}_flair.nii.gz"
    assert "24x24x20 voxels of 2x2x2 mm" in error.reason and "48x48x40 voxels of 1x1x1 mm" in error.reason
    assert "does not resample" in error.reason

    options = batch_predict.Options(str(predictor.model_path), str(tmp_path / "out"), pictures=False)
    summary = batch_predict.predict_local(options, [str(folder)], echo=lambda *_: None, predictor=predictor)
    (failure,) = summary.failures
    assert (failure["stage"], failure["file"]) == ("geometry", f"{PID}_flair.nii.gz")
    assert json.loads((tmp_path / "out" / "errors.jsonl").read_text())["reason"] == error.reason
    assert not (tmp_path / "out" / f"{PID}.nii.gz").exists()


def test_a_dataset_without_recorded_geometry_is_not_checked_and_says_so(scan, stub_file, tmp_path):
    predictor = _predictor(tmp_path, stub_file, False, None)
    assert not predictor.expected.recorded and predictor.expected.orientation is None
    folder = _write(tmp_path / "in", *scan)
    source, convention = inputs.source_from_folder(str(folder), predictor)
    prepared = prediction.prepare(predictor, source, convention)
    assert prepared.grid.reorientation is None and "not checked" in prepared.notes[0]


def test_the_manifest_records_the_training_geometry(scan, tmp_path):
    volumes, affine = scan
    for k in (1, 2):
        _write(tmp_path / "cohort", volumes, affine, pid=f"BraTS20_Training_00{k}")
    summary = run_pipeline(tmp_path / "cohort", tmp_path / "datasets", **{"n4.enabled": False})
    manifest = json.loads(pathlib.Path(summary.dataset_dir, "manifest.json").read_text())
    assert manifest["geometry"] == {"orientations": ["LPS"],
                                    "grids": [{"shape": [48, 48, 40], "spacing_mm": [1.0, 1.0, 1.0]}]}
    run = tmp_path / "run"  # a model trained on it: prediction reads the geometry from the manifest
    run.mkdir()
    (run / "lineage.json").write_text(json.dumps({"data_dir": summary.dataset_dir, "version_id": summary.version_id}))
    (run / "model.keras").write_bytes(b"")  # never loaded (with_model=False)
    (run / "config.json").write_text(json.dumps({"patch_size": [16, 16, 16]}))
    predictor = predictor_lib.load_predictor(str(run / "model.keras"), with_model=False)
    assert predictor.geometry == manifest["geometry"]
    assert predictor.expected.orientation == "LPS"
    assert predictor.expected.describe() == "orientation LPS, 48x48x40 voxels of 1x1x1 mm"


def test_evaluation_turns_a_prediction_into_the_truths_orientation_or_names_its_grid(scan, tmp_path):
    volumes, affine = scan
    _write(tmp_path / "truth", volumes, affine)
    preds = tmp_path / "preds"
    preds.mkdir()
    ras, ras_affine = _turned({"seg": volumes["seg"]}, affine, "RAS")
    (preds / f"{PID}.nii.gz").write_bytes(synthetic_data.nifti_bytes(ras["seg"], ras_affine))
    rows, failures, _ = scoring.score_folders(str(preds), str(tmp_path / "truth"), echo=lambda *_: None)
    assert not failures and all(rows[0][f"dice_{r}"] == 1.0 for r in ("WT", "TC", "ET"))

    coarse, coarse_affine = _at_2mm({"seg": volumes["seg"]}, affine)
    (preds / f"{PID}.nii.gz").write_bytes(synthetic_data.nifti_bytes(coarse["seg"], coarse_affine))
    rows, failures, _ = scoring.score_folders(str(preds), str(tmp_path / "truth"), echo=lambda *_: None)
    (failure,) = failures
    assert (failure["stage"], failure["file"]) == ("geometry", f"{PID}.nii.gz") and not rows
    assert "24x24x20 voxels of 2x2x2 mm" in failure["reason"] and "48x48x40 voxels of 1x1x1 mm" in failure["reason"]


def test_the_app_warns_when_the_background_is_not_zero(scan):
    volumes, _ = scan
    images = {k: v for k, v in volumes.items() if k != "seg"}
    names = {k: f"{PID}_{k}.nii.gz" for k in images}
    assert session.background_warning(images, names) is None  # skull-stripped: 0 outside the brain
    noisy = dict(images, t1=images["t1"] + np.random.default_rng(0).integers(1, 20, images["t1"].shape))
    warning = session.background_warning(noisy, names)
    assert warning is not None and f"{PID}_t1.nii.gz (100% of its border voxels)" in warning
    assert "skull-stripped" in warning and "flair" not in warning


def test_the_app_scores_a_truth_stored_in_another_orientation(scan, tmp_path):
    volumes, affine = scan
    ras, ras_affine = _turned({"seg": volumes["seg"]}, affine, "RAS")
    path = tmp_path / "truth.nii.gz"
    path.write_bytes(synthetic_data.nifti_bytes(ras["seg"], ras_affine))
    classes = session.truth_classes(str(path), "brats2020", (affine, volumes["seg"].shape))
    np.testing.assert_array_equal(classes, np.vectorize({0: 0, 1: 1, 2: 2, 4: 3}.get)(volumes["seg"]))
    coarse, coarse_affine = _at_2mm({"seg": volumes["seg"]}, affine)
    path.write_bytes(synthetic_data.nifti_bytes(coarse["seg"], coarse_affine))
    with pytest.raises(InputError, match="truth.nii.gz is 24x24x20 voxels of 2x2x2 mm"):
        session.truth_classes(str(path), "brats2020", (affine, volumes["seg"].shape))


def test_the_app_says_scans_must_be_skull_stripped_and_co_registered(scan, stub_file, tmp_path):
    predictor = _predictor(tmp_path, stub_file, False, _trained_on(scan, False))
    text = views.model_summary(predictor)
    # issue 21: the model's own grid, once; no challenge grid that contradicts it
    assert "skull-stripped and on this model's grid" in text and "SRI24" not in text
    assert text.count("48x48x40") == 1
    assert "orientation LPS, 48x48x40 voxels of 1x1x1 mm" in text and "another grid is refused" in text
    # the example case comes on that grid, so the page's example is never refused
    assert session.example_shape(predictor.preprocess_cfg, predictor.expected) == TINY_SHAPE
    assert session.example_spacing(predictor.expected) == (1.0, 1.0, 1.0)
