"""Prediction: sliding window, outputs in the patient's own space, bad input, Beam."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from shared import layouts
from shared.nifti_io import load_array, parse_nifti
from tests.helpers import IN_PROCESS, ROOT, TINY_SHAPE, stub_classes
from serving import batch_predict, inference, inputs, models, outputs, prediction, predictor as predictor_lib


def _pointwise(batch):
    """A 'model' whose answer at a voxel depends only on that voxel: softmax of (x, -x)."""
    x = batch[..., :1]
    e = np.exp(np.concatenate([x, -x], axis=-1))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("shape", [(37, 29, 21), (10, 40, 16)])
@pytest.mark.parametrize("tta", ["none", "all"])
def test_sliding_window_over_a_volume_not_a_multiple_of_the_patch(shape, tta):
    rng = np.random.default_rng(0)
    image = rng.normal(size=shape + (2,)).astype(np.float32)
    calls = []

    def predict(batch):
        calls.append(batch.shape)
        return _pointwise(batch)

    probs = inference.sliding_window(predict, image, (16, 16, 16), overlap=0.5, batch_size=2, tta=tta)
    assert probs.shape == shape + (2,)
    np.testing.assert_allclose(probs, _pointwise(image[None])[0], rtol=1e-5, atol=1e-6)
    assert all(c[1:4] == (16, 16, 16) for c in calls)


def test_windows_cover_the_axis_with_the_overlap_asked():
    for dim, patch in [(37, 16), (16, 16), (155, 128), (240, 128), (5, 16)]:
        starts = inference.window_starts(dim, patch, 0.5)
        assert starts[0] == 0 and starts[-1] == max(dim - patch, 0)
        assert all(b - a <= patch // 2 for a, b in zip(starts, starts[1:]))


def test_gaussian_weights_peak_in_the_centre_and_never_vanish():
    w = inference.gaussian_weights((16, 12, 8))
    assert w.shape == (16, 12, 8) and w.min() > 0
    assert np.unravel_index(w.argmax(), w.shape) in {(7, 5, 3), (8, 6, 4), (7, 6, 4), (8, 5, 3)}
    assert w[0, 0, 0] < 0.01


def test_overlapping_windows_are_blended_with_gaussian_weights():
    """A model whose answer differs per window: the blend at each voxel is the windows' weighted mean.

    The image's first channel is the voxel's x index, so the model can tell
    a window by its first voxel; it answers one constant probability per
    window.  Along y and z there is one window, so only the x weights (a
    Gaussian of sigma patch/8 around each window's centre) matter.
    """
    shape, patch = (40, 16, 16), (16, 16, 16)
    image = np.broadcast_to(np.arange(shape[0], dtype=np.float32)[:, None, None, None], shape + (1,)).copy()

    def per_window(batch):
        share = batch[:, :1, :1, :1, :1] / 100.0 + 0.1  # start 0, 8, 16, 24 -> 0.1, 0.18, 0.26, 0.34
        ones = np.ones(batch.shape[:4] + (1,), np.float32)
        return np.concatenate([ones - share * ones, share * ones], axis=-1)

    got = inference.sliding_window(per_window, image, patch, overlap=0.5)[:, 0, 0, 1]
    starts = inference.window_starts(shape[0], patch[0], 0.5)
    assert starts == [0, 8, 16, 24]
    x = np.arange(shape[0])
    weights = np.array([np.where((x >= s) & (x < s + 16), np.exp(-0.5 * ((x - s - 7.5) / 2.0) ** 2), 0)
                        for s in starts])
    answers = np.array([s / 100.0 + 0.1 for s in starts])[:, None]
    np.testing.assert_allclose(got, (weights * answers).sum(0) / weights.sum(0), rtol=1e-5)
    uniform = ((weights > 0) * answers).sum(0) / (weights > 0).sum(0)
    assert np.abs(got - uniform).max() > 0.02  # the weights matter to this answer


def test_flip_sets():
    assert inference.flip_sets("none") == [()]
    assert len(inference.flip_sets("axes")) == 4 and len(set(inference.flip_sets("all"))) == 8
    with pytest.raises(ValueError, match="unknown tta"):
        inference.flip_sets("rot90")


def _patient_dir(tiny_cohort, pid="BraTS20_Training_001"):
    return str(tiny_cohort / pid)


BRATS2020_NUMBERING = {0: 0, 1: 1, 2: 2, 3: 4}  # training class -> label written (enhancing is 4)
BRATS2023_NUMBERING = {0: 0, 1: 1, 2: 2, 3: 3}


def _stub_answer(predictor, source, convention, numbering):
    """What the stub must write for a patient: its classes on the preprocessed image, uncropped, renumbered."""
    from shared import volume_ops

    record = prediction.prepare(predictor, source, convention).record
    classes = volume_ops.uncrop(stub_classes(record.image), record.crop_box, record.original_shape)
    assert set(np.unique(classes).tolist()) == {0, 1, 2, 3}, "the stub must answer every class"
    return np.vectorize(numbering.get)(classes)


def test_prediction_is_written_in_the_source_geometry(stub_model, tiny_cohort, tmp_path):
    predictor = predictor_lib.load_predictor(str(stub_model))
    source, convention = inputs.source_from_folder(_patient_dir(tiny_cohort), predictor)
    assert convention == "brats2020"
    pred = prediction.predict_patient(predictor, source, convention, tta="axes")
    paths = outputs.write_outputs(pred, str(tmp_path), predictor)

    src = nib.load(source.files["flair"])
    out = nib.load(paths["segmentation"])
    assert out.shape == src.shape == TINY_SHAPE
    np.testing.assert_allclose(out.affine, src.affine)
    assert np.issubdtype(out.get_data_dtype(), np.integer)
    # every class, each where the stub put it and under its BraTS 2020 number
    np.testing.assert_array_equal(np.asarray(out.dataobj), _stub_answer(predictor, source, convention,
                                                                        BRATS2020_NUMBERING))
    report = json.loads(open(paths["volumes"]).read())
    assert report["labels"] == {"background": 0, "NCR": 1, "ED": 2, "ET": 4}
    assert report["challenge"] == "brats2020" and report["label_convention"] == "brats2020"
    voxel_ml = float(np.prod(pred.spacing)) / 1000
    assert (pred.classes == 3).sum() > 0
    assert report["volumes_ml"]["ET"] == pytest.approx((pred.classes == 3).sum() * voxel_ml, abs=1e-3)
    assert report["dataset_version_id"] == predictor.version_id
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert open(paths["gif"], "rb").read(6) == b"GIF89a"


def test_the_same_preprocessing_as_the_dataset(tiny_model, tiny_dataset):
    predictor = predictor_lib.load_predictor(str(tiny_model))
    manifest = json.loads(open(os.path.join(tiny_dataset.dataset_dir, "manifest.json")).read())
    assert predictor.preprocess_cfg == manifest["config"]
    assert predictor.window == (16, 16, 16)
    assert predictor_lib.load_predictor(str(tiny_model), window="volume").window == (32, 32, 32)


def test_lineage_copy_serves_when_the_dataset_is_gone(tiny_model, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_model.parent, run, ignore=shutil.ignore_patterns("checkpoints", "saved_model", "tensorboard"))
    lineage = json.loads((run / "lineage.json").read_text())
    lineage["data_dir"] = str(tmp_path / "moved")
    (run / "lineage.json").write_text(json.dumps(lineage))
    predictor = predictor_lib.load_predictor(str(run / "model.keras"))
    assert predictor.data_dir is None and predictor.version_id == lineage["version_id"]


def test_a_model_whose_channels_do_not_match_is_refused(tiny_model, tmp_path):
    from trainer import model as model_lib

    run = tmp_path / "run"
    shutil.copytree(tiny_model.parent, run, ignore=shutil.ignore_patterns("checkpoints", "saved_model", "tensorboard"))
    model_lib.build_unet((None, None, None, 3), model_lib.preset("tiny")).save(run / "model.keras")
    with pytest.raises(models.ModelError, match="takes 3 input channels.*gives 4"):
        predictor_lib.load_predictor(str(run / "model.keras"))


def _bad_cohort(tiny_cohort, root):
    """Two good patients and one of each kind of bad input."""
    for pid in ("BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003",
                "BraTS20_Training_004", "BraTS20_Training_005"):
        shutil.copytree(tiny_cohort / pid, root / pid)
    os.remove(root / "BraTS20_Training_003" / "BraTS20_Training_003_t1ce.nii.gz")  # missing modality
    (root / "BraTS20_Training_004" / "BraTS20_Training_004_t2.nii.gz").write_bytes(b"not a nifti file")
    small = nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4))  # shape disagrees
    nib.save(small, root / "BraTS20_Training_005" / "BraTS20_Training_005_t1.nii.gz")
    return sorted(str(p) for p in root.iterdir())


def _check_bad_cohort_summary(summary, out):
    assert [d["patient"] for d in summary.predicted] == ["BraTS20_Training_001", "BraTS20_Training_002"]
    failures = {f["patient"]: f for f in summary.failures}
    assert failures["BraTS20_Training_003"]["stage"] == "discover"
    assert "t1ce" in failures["BraTS20_Training_003"]["reason"]
    assert failures["BraTS20_Training_004"]["file"] == "BraTS20_Training_004_t2.nii.gz"
    assert "NIfTI" in failures["BraTS20_Training_004"]["reason"]
    assert failures["BraTS20_Training_005"]["stage"] == "validate"
    assert "shape" in failures["BraTS20_Training_005"]["reason"]
    lines = (out / "errors.jsonl").read_text().splitlines()
    assert sorted(json.loads(l)["patient"] for l in lines) == sorted(failures)


def test_bad_patients_are_reported_and_the_rest_predicted(tiny_model, tiny_cohort, tmp_path):
    folders = _bad_cohort(tiny_cohort, tmp_path / "in")
    options = batch_predict.Options(str(tiny_model), str(tmp_path / "out"), pictures=False)
    summary = batch_predict.predict_local(options, folders, echo=lambda *_: None)
    _check_bad_cohort_summary(summary, tmp_path / "out")


def test_beam_gives_the_same_segmentations(tiny_model, tiny_cohort, tmp_path):
    folders = _bad_cohort(tiny_cohort, tmp_path / "in")
    local = batch_predict.Options(str(tiny_model), str(tmp_path / "local"), pictures=False)
    batch_predict.predict_local(local, folders[:2], echo=lambda *_: None)
    beam = batch_predict.Options(str(tiny_model), str(tmp_path / "beam"), pictures=False)
    summary = batch_predict.predict_beam(beam, folders, IN_PROCESS)
    _check_bad_cohort_summary(summary, tmp_path / "beam")
    for pid in ("BraTS20_Training_001", "BraTS20_Training_002"):
        assert (tmp_path / "beam" / f"{pid}.nii.gz").read_bytes() == (tmp_path / "local" / f"{pid}.nii.gz").read_bytes()
        reports = [json.loads((tmp_path / where / f"{pid}.json").read_text()) for where in ("local", "beam")]
        for report in reports:
            report.pop("seconds")
        assert reports[1] == reports[0] and reports[1]["dataset_version_id"] and reports[1]["model"]


def _a_bug(*args, **kwargs):
    raise TypeError("unsupported operand type(s) for +: 'NoneType' and 'int'")


def test_a_bug_in_prediction_stops_the_cohort_instead_of_failing_every_patient(tiny_model, tiny_cohort, tmp_path,
                                                                              monkeypatch):
    """A TypeError is this code's bug, not a patient's bad input: it must not become one failure line per patient."""
    folders = _bad_cohort(tiny_cohort, tmp_path / "in")
    monkeypatch.setattr(prediction, "predict_patient", _a_bug)
    options = batch_predict.Options(str(tiny_model), str(tmp_path / "out"), pictures=False)
    with pytest.raises(TypeError, match="NoneType"):
        batch_predict.predict_local(options, folders, echo=lambda *_: None)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_bug_in_the_beam_write_step_fails_the_job(tiny_model, tiny_cohort, tmp_path, monkeypatch):
    folders = _bad_cohort(tiny_cohort, tmp_path / "in")
    monkeypatch.setattr(prediction, "finish", _a_bug)
    options = batch_predict.Options(str(tiny_model), str(tmp_path / "out"), pictures=False)
    with pytest.raises(Exception, match="NoneType"):
        batch_predict.predict_beam(options, folders, IN_PROCESS)
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_brats2023_folder_is_read_by_a_brats2020_model(stub_model, tiny_cohort, tmp_path):
    layout = layouts.get_layout("brats2023_gli")
    folder = tmp_path / "BraTS-GLI-00001-000"
    folder.mkdir()
    for modality in layouts.MODALITIES:
        shutil.copy(tiny_cohort / "BraTS20_Training_001" / f"BraTS20_Training_001_{modality}.nii.gz",
                    folder / layout.expected_name(folder.name, modality))
    predictor = predictor_lib.load_predictor(str(stub_model))
    source, convention = inputs.source_from_folder(str(folder), predictor)
    assert convention == "brats2023" and set(source.files) == set(layouts.MODALITIES)
    pred = prediction.predict_patient(predictor, source, convention)
    np.testing.assert_array_equal(pred.stored_labels, _stub_answer(predictor, source, convention,
                                                                   BRATS2023_NUMBERING))


def test_cli_refuses_a_missing_model_with_a_clear_message(tiny_cohort, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving.predict", f"--model={tmp_path}/nope.keras",
         f"--input={_patient_dir(tiny_cohort)}", f"--output_dir={tmp_path}/out"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "nope.keras does not exist" in result.stderr


def _tiny_cpu_spec():
    """The network of ``tiny_cpu.py`` (and so of the tiny_model fixture), softmax over four classes."""
    from configs.train import tiny_cpu
    from trainer import model as model_lib

    return model_lib.spec_from_config(tiny_cpu.get_config().model)


def _mixed_float16_twin(model):
    """The same network and weights, built under mixed_float16 as ``precision=auto`` does on a GPU."""
    import keras

    from trainer import model as model_lib

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        twin = model_lib.build_unet((None, None, None, model.input_shape[-1]), _tiny_cpu_spec())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    twin.set_weights(model.get_weights())
    return twin


def test_a_model_trained_under_mixed_float16_predicts_on_a_cpu(tiny_model, tiny_cohort, tmp_path):
    import keras
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("the missing kernel is a CPU one")
    run = tmp_path / "run"
    shutil.copytree(tiny_model.parent, run, ignore=shutil.ignore_patterns("checkpoints", "saved_model", "tensorboard"))
    float32 = predictor_lib.load_predictor(str(tiny_model))
    _mixed_float16_twin(float32.model).save(run / "model.keras")
    as_saved = keras.saving.load_model(run / "model.keras", compile=False)
    assert as_saved.get_layer("enc0_pool").dtype_policy.compute_dtype == "float16"
    with pytest.raises(Exception, match="MaxPool3D"):  # the bug: no float16 MaxPool3D kernel on a CPU
        as_saved.predict_on_batch(np.zeros((1, 16, 16, 16, 4), np.float32))

    mixed = predictor_lib.load_predictor(str(run / "model.keras"))
    assert {layer.dtype_policy.compute_dtype for layer in mixed.model.layers} == {"float32"}
    source, convention = inputs.source_from_folder(_patient_dir(tiny_cohort), float32)
    prepared = prediction.prepare(float32, source, convention)
    image = prepared.record.image.astype(np.float32)
    # the same weights computing in float32: only summation order may differ
    np.testing.assert_allclose(inference.sliding_window(mixed.predict_fn(), image, mixed.window),
                               inference.sliding_window(float32.predict_fn(), image, float32.window),
                               rtol=0, atol=1e-5)
    np.testing.assert_array_equal(prediction.infer(mixed, prepared), prediction.infer(float32, prepared))


def test_the_serving_precision_can_keep_the_saved_policies(tmp_path):
    from trainer import model as model_lib

    path = tmp_path / "mixed.keras"
    _mixed_float16_twin(model_lib.build_unet((None, None, None, 4), _tiny_cpu_spec())).save(path)
    kept = models.load_model(str(path), precision="as_trained")
    assert kept.get_layer("enc0_a_conv").dtype_policy.name == "mixed_float16"
    assert models.load_model(str(path), precision="float32").get_layer("enc0_a_conv").dtype_policy.name == "float32"
    with pytest.raises(models.ModelError, match="unknown serving precision 'half'"):
        models.load_model(str(path), precision="half")


def test_each_source_file_is_read_once_per_prediction(stub_model, tiny_cohort, monkeypatch):
    """The core's load keeps the header and the scans as stored: nothing after it reads a file again."""
    from collections import Counter

    from shared import storage

    predictor = predictor_lib.load_predictor(str(stub_model))
    source, convention = inputs.source_from_folder(_patient_dir(tiny_cohort), predictor)
    real, reads = storage.read_bytes, Counter()

    def counted(path, *args, **kwargs):
        reads[path] += 1
        return real(path, *args, **kwargs)

    for module in list(sys.modules.values()):  # wherever read_bytes is looked up
        if getattr(module, "read_bytes", None) is real:
            monkeypatch.setattr(module, "read_bytes", counted)
    pred = prediction.predict_patient(predictor, source, convention, probabilities=True, all_scans=True)
    assert {path: reads[path] for path in source.files.values()} == dict.fromkeys(source.files.values(), 1)
    monkeypatch.undo()
    assert set(pred.scans) == set(source.files) and pred.display is pred.scans["flair"]
    for channel, path in source.files.items():  # the voxels as stored, not the reoriented or cropped input
        np.testing.assert_array_equal(pred.scans[channel], load_array(parse_nifti(pathlib.Path(path).read_bytes(), path), path))
    np.testing.assert_allclose(pred.header.get_zooms(), nib.load(source.files["flair"]).header.get_zooms())


def test_a_window_size_is_read_as_x_y_z_or_as_printed_xxyxz():
    """choose_inference and the reports print window sizes as 32x32x32; --window takes them back as they are."""
    cfg = {"crop": {"size": [64, 64, 48]}, "modalities": ["flair"], "layout": "brats2020"}
    assert predictor_lib.window_size("32,32,16", None, cfg) == (32, 32, 16)
    assert predictor_lib.window_size("32x32x16", None, cfg) == (32, 32, 16)
    with pytest.raises(models.ModelError, match="three positive sizes"):
        predictor_lib.window_size("32x32", None, cfg)
