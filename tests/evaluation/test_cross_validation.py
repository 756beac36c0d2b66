"""Cross-validation folds, ensembles of models, and post-processing at prediction."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs.train import tiny_cpu
from tests.helpers import ROOT, TINY_SHAPE, build_stub_model, override, run_pipeline
from evaluation import cross_validation as scoring_folds
from trainer import cross_validation, data, training


@pytest.fixture(scope="module")
def folded_dataset(tiny_cohort, tmp_path_factory):
    """The tiny cohort preprocessed with 2 folds of its training patients (never modify it)."""
    return run_pipeline(tiny_cohort, tmp_path_factory.mktemp("folded"), **{"split.num_folds": 2})


def _manifest(dataset_dir) -> dict:
    with open(f"{dataset_dir}/manifest.json") as f:
        return json.load(f)


def _cfg(dataset_dir, **overrides):
    cfg = tiny_cpu.get_config()
    cfg.data_dir = dataset_dir
    cfg.patch_size = (16, 16, 16)
    cfg.epochs, cfg.steps_per_epoch = 1, 1
    return override(cfg, overrides)


def _ids(ds) -> list[str]:
    from shared import schema

    return [schema.decode(r.numpy()).patient_id for r in ds]


@pytest.mark.parametrize("fold", [0, 1])
def test_a_fold_trains_on_the_other_folds_and_validates_on_its_own(folded_dataset, fold):
    manifest = _manifest(folded_dataset.dataset_dir)
    folds = manifest["folds"]
    assert sorted(folds) == sorted(manifest["splits"]["train"]["patients"]) and set(folds.values()) == {0, 1}
    info = data.with_fold(data.open_dataset(folded_dataset.dataset_dir), fold)
    assert set(info.val_patients) == {p for p, k in folds.items() if k == fold}
    assert set(info.train_patients) == {p for p, k in folds.items() if k != fold}
    assert not set(info.train_patients) & set(info.val_patients)
    assert not set(info.train_patients) & set(manifest["splits"]["val"]["patients"]), "the val split stays held out"
    # what the pipelines actually read
    trained = _ids(data.epoch_records(info, epoch=0))
    assert sorted(trained) == sorted(info.train_patients) and info.num_train == len(trained)
    val_ids = _val_ids(info)
    assert sorted(val_ids) == sorted(info.val_patients) and info.num_val == len(val_ids)


def _val_ids(info):
    """Patients of the validation stream: val_dataset's filter read with the ids, and val_dataset's length."""
    import tensorflow as tf

    from shared import manifest as manifest_lib

    ds = tf.data.TFRecordDataset(list(info.val_files), compression_type=manifest_lib.tf_compression_type(
        info.compression))
    ds = data._only_patients(ds, info.val_patients)
    count = sum(1 for _ in data.val_dataset(info))
    ids = _ids(ds)
    assert count == len(ids)
    return ids


def test_a_dataset_without_folds_or_a_fold_out_of_range_is_refused(tiny_dataset, folded_dataset, tmp_path):
    with pytest.raises(training.LaunchError, match="no cross-validation folds.*split.num_folds"):
        training.prepare(_cfg(tiny_dataset.dataset_dir, fold=0).to_dict(), str(tmp_path))
    with pytest.raises(training.LaunchError, match="fold 2 does not exist: .* has 2 folds"):
        training.prepare(_cfg(folded_dataset.dataset_dir, fold=2).to_dict(), str(tmp_path))
    with pytest.raises(training.LaunchError, match="fold -3 does not exist"):
        training.prepare(_cfg(folded_dataset.dataset_dir, fold=-3).to_dict(), str(tmp_path))
    with pytest.raises(training.LaunchError, match=r"fold\(s\) \[5\] do not exist"):
        cross_validation.train_folds(_cfg(folded_dataset.dataset_dir), str(tmp_path / "cv"), folds=[5])


@pytest.mark.slow  # two tiny trainings and their scoring: about 2-3 minutes on 2 shared cores
def test_two_fold_cross_validation_writes_folds_summary_and_postprocessing(folded_dataset, tmp_path):
    workdir = tmp_path / "cv"
    cfg = _cfg(folded_dataset.dataset_dir)
    outcomes = cross_validation.train_folds(cfg, str(workdir), echo=lambda *_: None)
    assert [o.workdir for o in outcomes] == [str(workdir / "fold_0"), str(workdir / "fold_1")]
    folds = _manifest(folded_dataset.dataset_dir)["folds"]
    for k in (0, 1):
        lineage = json.loads((workdir / f"fold_{k}" / "lineage.json").read_text())
        assert lineage["fold"] == k and lineage["num_folds"] == 2
        assert sorted(lineage["val_patients"]) == sorted(p for p, f in folds.items() if f == k)
    # a fold relaunched into another fold's workdir is refused
    with pytest.raises(training.LaunchError, match="trained fold 0, not fold 1"):
        training.train_and_evaluate(dict(cfg.to_dict(), fold=1), str(workdir / "fold_0"), echo=lambda *_: None)

    summary = scoring_folds.summarize(str(workdir), echo=lambda *_: None)
    assert sorted((r["fold"], r["patient"]) for r in summary.rows) == sorted((f, p) for p, f in folds.items())
    table = summary.table
    for column in ("dice_WT", "dice_TC", "dice_ET", "hd95_WT"):
        per_fold = [np.mean([r[column] for r in summary.rows if r["fold"] == k]) for k in (0, 1)]
        assert table["per_fold"][0][column] == pytest.approx(per_fold[0])
        assert table["mean_over_folds"][column] == pytest.approx(np.mean(per_fold))
    written = json.loads((workdir / "cross_validation" / "summary.json").read_text())
    assert written["about"]["mean_over_folds"]["dice_WT"] == pytest.approx(table["mean_over_folds"]["dice_WT"])
    scores = (workdir / "cross_validation" / "scores.csv").read_text().splitlines()
    assert scores[0].startswith("patient,fold,") and len(scores) == 1 + len(folds)
    for k in (0, 1):
        assert (workdir / f"fold_{k}" / "validation" / "scores.csv").exists()
    chosen = json.loads((workdir / "postprocessing.json").read_text())
    assert chosen["patients"] == len(folds) and chosen["mean_dice_after"] >= chosen["mean_dice_before"]
    printed = scoring_folds.format_summary(summary)
    assert f"{table['mean_over_folds']['dice_WT']:.3f}" in printed.splitlines()[-4]  # the "mean" row

    # the workdir as --model: both folds, with the chosen post-processing
    from serving import predictor as predictor_lib

    predictor = predictor_lib.load_predictor(str(workdir))
    assert predictor.model_paths == (str(workdir / "fold_0" / "model.keras"), str(workdir / "fold_1" / "model.keras"))
    assert len(predictor.members) == 2
    assert predictor.postprocessing_path == str(workdir / "postprocessing.json")
    assert list(predictor.postprocessing) == chosen["rules"]


# ----------------------------------------------------------------------------- ensembles


def _second_stub():
    """The stub with other logit weights: different probabilities, same layers."""
    model = build_stub_model()
    weights, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([weights * 0.3, bias * 0.5 + np.array([0.0, 1.0, 2.0, 0.0], np.float32)])
    return model


@pytest.fixture(scope="module")
def two_runs(stub_model, tmp_path_factory):
    """Two run folders trained 'on' the tiny dataset: the stub and a second stub."""
    root = tmp_path_factory.mktemp("two_runs")
    first, second = root / "a", root / "b"
    shutil.copytree(stub_model.parent, first)
    shutil.copytree(stub_model.parent, second)
    _second_stub().save(second / "model.keras")
    return first / "model.keras", second / "model.keras"


def test_an_ensemble_predicts_the_mean_of_its_members_probabilities(two_runs, tiny_cohort):
    from serving import inputs, prediction, predictor as predictor_lib

    one = predictor_lib.load_predictor(str(two_runs[0]))
    two = predictor_lib.load_predictor(str(two_runs[1]))
    both = predictor_lib.load_predictor([str(p) for p in two_runs])
    assert len(both.members) == 2 and both.model_paths == tuple(str(p) for p in two_runs)
    source, convention = inputs.source_from_folder(str(sorted(tiny_cohort.iterdir())[0]), one)
    prepared = prediction.prepare(one, source, convention)
    p1, p2 = (prediction.infer_probabilities(p, prepared, tta="axes") for p in (one, two))
    assert np.abs(p1 - p2).max() > 0.1, "the members must disagree for the test to mean anything"
    mean = prediction.infer_probabilities(both, prepared, tta="axes")
    np.testing.assert_allclose(mean, (p1 + p2) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(prediction.infer(both, prepared), np.argmax((p1 + p2) / 2, axis=-1))


def test_ensemble_probabilities_are_written_beside_the_segmentation(two_runs, tiny_cohort, tmp_path):
    import nibabel as nib

    from serving import batch_predict

    folder = str(sorted(tiny_cohort.iterdir())[0])
    options = batch_predict.Options(tuple(str(p) for p in two_runs), str(tmp_path), pictures=False,
                                    save_probabilities=True)
    summary = batch_predict.predict_local(options, [folder], echo=lambda *_: None)
    assert not summary.failures
    files = summary.predicted[0]["files"]
    with np.load(files["probabilities"]) as f:
        probs, keys = f["probabilities"], list(f["class_keys"])
    assert probs.dtype == np.float16 and probs.shape == TINY_SHAPE + (4,)
    assert keys == ["background", "NCR", "ED", "ET"]
    np.testing.assert_allclose(probs.astype(np.float32).sum(-1), 1.0, atol=5e-3)
    stored = np.asarray(nib.load(files["segmentation"]).dataobj)
    classes = np.argmax(probs.astype(np.float32), axis=-1)
    agree = np.mean(np.array([0, 1, 2, 4])[classes] == stored)
    assert agree > 0.999  # float16 rounding may flip a near tie
    report = json.loads(open(files["volumes"]).read())
    assert report["ensemble"] == [str(p) for p in two_runs]


def _edit_lineage(run, **changes):
    lineage = json.loads((run / "lineage.json").read_text())
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            lineage[outer][inner] = value
        else:
            lineage[key] = value
    (run / "lineage.json").write_text(json.dumps(lineage))


@pytest.mark.parametrize("change, message", [
    ({"preprocess.min_brain_voxels": 1}, "preprocessing differs in min_brain_voxels"),
    ({"preprocess.layout": "brats2021"}, "trained for different challenges"),
    ({"version_id": "0123456789abcdef"}, "dataset version 0123456789abcdef"),
])
def test_models_with_different_preprocessing_are_not_ensembled(two_runs, tmp_path, change, message):
    from serving import models, predictor as predictor_lib

    other = tmp_path / "other"
    shutil.copytree(two_runs[1].parent, other)
    # the dataset out of reach: the preprocessing comes from the lineage's copy
    _edit_lineage(other, data_dir=str(tmp_path / "gone"), **change)
    same = tmp_path / "same"
    shutil.copytree(two_runs[0].parent, same)
    _edit_lineage(same, data_dir=str(tmp_path / "gone"))
    with pytest.raises(models.ModelError, match=message):
        predictor_lib.load_predictor([str(same / "model.keras"), str(other / "model.keras")])


def test_a_folder_that_is_neither_run_nor_cross_validation_is_refused(tmp_path):
    from serving import models, predictor as predictor_lib

    with pytest.raises(models.ModelError, match="neither model.keras nor fold_<k>/model.keras"):
        predictor_lib.load_predictor(str(tmp_path))


def test_prediction_applies_the_postprocessing_of_a_cross_validation_workdir(two_runs, tiny_cohort, tmp_path):
    from serving import inputs, prediction, predictor as predictor_lib

    cv = tmp_path / "cv"
    for k, model in enumerate(two_runs):
        shutil.copytree(model.parent, cv / f"fold_{k}")
    # every enhancing tumour becomes core
    (cv / "postprocessing.json").write_text(json.dumps(
        {"challenge": "brats2020", "rules": [{"rule": "et_to_core", "max_voxels": 10 ** 9}]}))
    with_rules = predictor_lib.load_predictor(str(cv))
    without = predictor_lib.load_predictor(str(cv), postprocessing="none")
    assert with_rules.postprocessing == ({"rule": "et_to_core", "max_voxels": 10 ** 9},)
    source, convention = inputs.source_from_folder(str(sorted(tiny_cohort.iterdir())[0]), with_rules)
    prepared = prediction.prepare(with_rules, source, convention)
    raw = prediction.infer(without, prepared)
    done = prediction.infer(with_rules, prepared)
    assert (raw == 3).sum() > 0 and (done == 3).sum() == 0
    np.testing.assert_array_equal(done == 1, (raw == 1) | (raw == 3))


def test_summarising_a_workdir_without_finished_folds_fails_with_the_cli(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trainer.cross_validate", f"--workdir={tmp_path}", "--train=false"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{tmp_path} holds no finished fold" in result.stderr


def test_summary_of_stub_folds_pools_their_validation_scores(folded_dataset, tmp_path):
    """The summary without training: each fold a stub model in a run folder whose lineage names its fold."""
    manifest = _manifest(folded_dataset.dataset_dir)
    workdir = tmp_path / "cv"
    for k in (0, 1):
        run = workdir / f"fold_{k}"
        run.mkdir(parents=True)
        (run / "lineage.json").write_text(json.dumps({
            "data_dir": folded_dataset.dataset_dir, "version_id": manifest["version_id"],
            "preprocess": manifest["config"], "challenge": "brats2020", "fold": k, "num_folds": 2,
            "val_patients": sorted(p for p, f in manifest["folds"].items() if f == k)}))
        (run / "config.json").write_text(json.dumps({"patch_size": [16, 16, 16]}))
        build_stub_model().save(run / "model.keras")
    summary = scoring_folds.summarize(str(workdir), echo=lambda *_: None)
    assert sorted(r["patient"] for r in summary.rows) == sorted(manifest["folds"])
    assert not set(r["patient"] for r in summary.rows) & set(manifest["splits"]["val"]["patients"])
    for k in (0, 1):
        dice = [r["dice_WT"] for r in summary.rows if r["fold"] == k]
        assert summary.table["per_fold"][k]["dice_WT"] == pytest.approx(np.mean(dice))
        kept = sorted(p.stem for p in (workdir / f"fold_{k}" / "validation").glob("*.npz"))
        assert kept == sorted(r["patient"] for r in summary.rows if r["fold"] == k)
        with np.load(workdir / f"fold_{k}" / "validation" / f"{kept[0]}.npz") as f:
            assert f["prediction"].shape == f["truth"].shape == (32, 32, 32)
    assert summary.table["mean_over_folds"]["dice_WT"] == pytest.approx(
        np.mean([summary.table["per_fold"][k]["dice_WT"] for k in (0, 1)]))
    chosen = json.loads((workdir / "postprocessing.json").read_text())
    assert chosen["challenge"] == "brats2020" and chosen["patients"] == len(manifest["folds"])
    assert (workdir / "cross_validation" / "summary.json").exists()
    # a missing fold: no summary
    shutil.rmtree(workdir / "fold_1")
    with pytest.raises(ValueError, match=r"fold\(s\) \[1\] of 2 have no finished model"):
        scoring_folds.summarize(str(workdir), echo=lambda *_: None)
