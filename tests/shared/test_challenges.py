"""Every registry entry (shared/challenges.py) through discovery, encoding and prediction output.

Each test runs on synthetic patients written in the challenge's own naming
and numbering, with every one of its labels present, so a wrong label map or
a region built from the wrong labels cannot pass.
"""

from __future__ import annotations

import json
import pathlib

import nibabel as nib
import numpy as np
import pytest

from configs.preprocess import challenge as challenge_config
from tests.helpers import IN_PROCESS, override
from beam_pipeline import launch
from preprocessing import discovery
from preprocessing.patient import preprocess
from serving import inputs, outputs, prediction, predictor as predictor_lib
from shared import challenges, labels, layouts, manifest, metrics, schema, volume_ops
from synthetic import cohort as synthetic_data

SHAPE = (48, 48, 40)
NAMES = list(challenges.CHALLENGES)

_GLI_2023 = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
# The evaluated regions of every task, as ../shared/notes/field_facts.md tabulates them (label values).
NOTES_REGIONS = {
    "brats2020": {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
    "brats2021": {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
    "brats2023_gli": _GLI_2023,
    "brats2024_gli": {**_GLI_2023, "NETC": (1,), "SNFH": (2,), "RC": (4,)},
    "brats2024_ssa": _GLI_2023,
    "brats2023_men": _GLI_2023,
    "brats2024_men_rt": {"GTV": (1,)},
    "brats2024_met": _GLI_2023,
    "brats2025_met": {**_GLI_2023, "RC": (4,)},
    "brats2024_ped": {"WT": (1, 2, 3, 4), "TC": (1, 2, 3), "ET": (1,), "NETC": (2,), "CC": (3,), "ED": (4,)},
    "brats2024_goat": _GLI_2023,
}


def small_config(name: str, spacing=(1.0, 1.0, 1.0), shape=SHAPE) -> dict:
    """The challenge's own config, shrunk for tiny volumes: a centred crop holding the whole grid, no N4."""
    cfg = challenge_config.get_config(name)
    grid = shape if not cfg.resample.enabled else volume_ops.resampled_shape(shape, spacing, (1, 1, 1))
    return override(cfg, {"crop.mode": "centered", "crop.size": tuple(grid), "n4.enabled": False,
                          "min_brain_voxels": 200}).to_dict()


def write(name: str, root: pathlib.Path, n: int = 1, spacing=(1.0, 1.0, 1.0), shape=SHAPE, **kwargs) -> list[str]:
    return synthetic_data.write_cohort(str(root), n, shape=shape, seed=2, lgg_fraction=0.0, challenge=name,
                                       spacing=spacing, **kwargs)


def test_the_registry_has_every_task_with_the_regions_of_the_notes():
    assert set(challenges.CHALLENGES) == set(NOTES_REGIONS)
    for name, regions in NOTES_REGIONS.items():
        assert challenges.get(name).regions == regions, name


def test_label_4_is_a_different_tissue_in_2020_gli_2024_and_ped_2024():
    keys = {name: challenges.get(name).class_keys[challenges.get(name).class_of(4)]
            for name in ("brats2020", "brats2024_gli", "brats2025_met", "brats2024_ped")}
    assert keys == {"brats2020": "ET", "brats2024_gli": "RC", "brats2025_met": "RC", "brats2024_ped": "ED"}
    assert 4 not in challenges.get("brats2024_gli").regions["WT"]  # RC is not tumour


@pytest.mark.parametrize("name", NAMES)
def test_discovery_finds_the_challenge_naming(name, tmp_path):
    entry = challenges.get(name)
    ids = write(name, tmp_path, n=2)
    found = discovery.discover(str(tmp_path), layouts.get_layout(name), entry.modalities)
    assert [p.patient_id for p in found.patients] == ids and not found.failures
    layout = layouts.get_layout(name)
    for patient in found.patients:
        expected = {ch: layout.expected_name(patient.patient_id, ch) for ch in entry.modalities + ("seg",)}
        assert {ch: pathlib.Path(p).name for ch, p in patient.files.items()} == expected


@pytest.mark.parametrize("name", NAMES)
def test_labels_round_trip_with_every_label_present(name):
    entry = challenges.get(name)
    patient = synthetic_data.make_patient(entry.patient_id(1), 1, SHAPE, "HGG", seed=2, challenge=name)
    assert sorted(np.unique(patient.seg).tolist()) == [0, *entry.label_values]
    classes = labels.to_classes(patient.seg, entry.label_convention)
    assert sorted(np.unique(classes).tolist()) == list(range(entry.num_classes))
    np.testing.assert_array_equal(labels.to_source(classes, entry.label_convention), patient.seg)
    for region, values in entry.regions.items():  # region masks from classes == from stored values
        np.testing.assert_array_equal(labels.region_masks(classes, entry)[region], np.isin(patient.seg, values))


def _predict_truth(name: str, root: pathlib.Path, cfg: dict) -> tuple[np.ndarray, nib.Nifti1Image, pathlib.Path]:
    """Preprocess one patient, take its record's mask as the network's answer, write it back like predict."""
    entry = challenges.get(name)
    found = discovery.discover(str(root), layouts.get_layout(name), entry.modalities)
    source = found.patients[0]
    done = preprocess(source, cfg)
    record = done.record
    assert record.mask.shape[-1] == entry.num_classes
    cropped = np.argmax(record.mask, axis=-1).astype(np.uint8)
    header = nib.load(source.files[entry.modalities[0]]).header
    assert done.grid.header.get_zooms() == header.get_zooms()  # the core kept the header it read
    prepared = prediction.Prepared(source, entry.label_convention, entry, record, done.grid)
    written = outputs.segmentation_bytes(prediction.finish(prepared, cropped, display=False))
    out = root / "pred.nii.gz"
    out.write_bytes(written)
    return cropped, nib.load(out), pathlib.Path(source.files["seg"])


@pytest.mark.parametrize("name", NAMES)
def test_prediction_is_written_in_the_source_geometry_and_numbering(name, tmp_path):
    write(name, tmp_path)
    _, written, seg_path = _predict_truth(name, tmp_path, small_config(name))
    truth = nib.load(seg_path)
    assert written.shape == truth.shape
    np.testing.assert_allclose(written.affine, truth.affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(truth.dataobj))


def test_men_rt_at_anisotropic_native_spacing_resamples_and_comes_back(tmp_path):
    spacing = (1.0, 1.0, 3.0)
    shape = (40, 40, 32)  # 40 x 40 x 96 mm: thick slices, as radiotherapy planning scans often are
    write("brats2024_men_rt", tmp_path, spacing=spacing, shape=shape)
    cfg = small_config("brats2024_men_rt", spacing, shape)
    assert cfg["resample"]["enabled"]  # the registry marks MEN-RT as native space
    source = discovery.discover(str(tmp_path), layouts.get_layout("brats2024_men_rt"), ("t1ce",)).patients[0]
    record = preprocess(source, cfg).record
    assert record.grid_shape == (40, 40, 96) and record.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert record.original_shape == shape and record.resampled
    decoded = schema.decode(schema.encode(record))  # the grid and spacing travel in the record
    assert decoded.grid_shape == (40, 40, 96) and decoded.spacing == pytest.approx((1.0, 1.0, 1.0))
    _, written, seg_path = _predict_truth("brats2024_men_rt", tmp_path, cfg)
    truth = nib.load(seg_path)
    assert written.shape == truth.shape == shape
    np.testing.assert_allclose(written.affine, truth.affine)
    np.testing.assert_allclose(written.header.get_zooms(), spacing)
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(truth.dataobj))


def test_gli_2024_resection_cavity_gets_its_own_class(tmp_path):
    write("brats2024_gli", tmp_path)
    cropped, _, seg_path = _predict_truth("brats2024_gli", tmp_path, small_config("brats2024_gli"))
    seg = np.asarray(nib.load(seg_path).dataobj)
    assert np.count_nonzero(cropped == 4) == np.count_nonzero(seg == 4) > 0  # RC, class 4
    assert np.count_nonzero(cropped == 3) == np.count_nonzero(seg == 3) > 0  # ET stays class 3
    row = metrics.score_patient(cropped, cropped, challenges.get("brats2024_gli"))
    assert row["volume_truth_RC_ml"] > 0 and row["dice_RC"] == 1.0


def test_crop_that_cuts_tumour_is_reported(tmp_path):
    write("brats2023_gli", tmp_path)
    cfg = small_config("brats2023_gli")
    cfg["crop"]["size"] = (8, 8, 8)
    source = discovery.discover(str(tmp_path), layouts.get_layout("brats2023_gli"), ("flair", "t1", "t1ce", "t2"))
    result = preprocess(source.patients[0], cfg)
    assert any("tumour voxels fall outside the crop box" in w for w in result.warnings)


TOY = challenges.Challenge(
    name="brats2026_toy", title="A made-up task: adding a challenge is adding an entry",
    naming=challenges.Naming(patient_dir=r"BraTS-TOY-\d{5}-\d{3}", separator="-",
                             tokens={"t1ce": "t1c", "flair": "t2f", "seg": "seg"},
                             id_format="BraTS-TOY-{index:05d}-000"),
    label_convention="toy2026",
    labels=(challenges.Label(1, "ET", "Enhancing tumour", (255, 215, 0)),
            challenges.Label(2, "ED", "Oedema", (60, 180, 75))),
    regions={"WT": (1, 2), "ET": (1,)}, grid=challenges.SRI24, crop={"mode": "centered", "size": (32, 32, 32)},
)


@pytest.fixture
def toy_challenge():
    challenges.register(TOY)
    yield TOY
    challenges.unregister(TOY.name)


def test_a_new_challenge_is_one_registry_entry(toy_challenge, tmp_path):
    """Register an entry and nothing else: a cohort in its naming becomes a dataset of its classes.

    (In-process: an entry registered at run time lives in this process only;
    the product's entries live in shared/challenges.py, which every worker imports.)
    """
    write(TOY.name, tmp_path / "cohort", n=3)
    cfg = override(challenge_config.get_config(TOY.name),
                   {"n4.enabled": False, "min_brain_voxels": 200, "split.val_fraction": 0.34,
                    "runtime.isolate": False}).to_dict()
    summary = launch.run(cfg, str(tmp_path / "cohort"), str(tmp_path / "out"), IN_PROCESS, echo=lambda *_: None)
    found = manifest.read_manifest(summary.dataset_dir)
    assert found["record"]["classes"] == ["background", "ET", "ED"]
    assert found["record"]["channels"] == ["flair", "t1ce"] and found["record"]["regions"] == {"WT": [1, 2], "ET": [1]}
    assert not found["failed"] and sum(summary.patients.values()) == 3


def test_one_dataset_from_three_cohorts_with_compatible_labels(tmp_path):
    """GLI 2023 + SSA + MEN (as GoAT does): cohorts recorded per patient, splits stratified by cohort."""
    for name in ("brats2023_gli", "brats2024_ssa", "brats2023_men"):
        write(name, tmp_path / name, n=3)
    cfg = override(challenge_config.get_config("brats2023_gli"),
                   {"n4.enabled": False, "min_brain_voxels": 200, "crop.mode": "centered",
                    "crop.size": (32, 32, 32), "split.val_fraction": 0.34}).to_dict()
    inputs = [str(tmp_path / n) for n in ("brats2023_gli", "brats2024_ssa", "brats2023_men")]
    summary = launch.run(cfg, inputs, str(tmp_path / "out"), IN_PROCESS, echo=lambda *_: None)
    found = manifest.read_manifest(summary.dataset_dir)
    assert set(found["cohorts"]) == {"brats2023_gli", "brats2024_ssa", "brats2023_men"}
    assert all(len(c["patients"]) == 3 for c in found["cohorts"].values())
    val = set(found["splits"]["val"]["patients"])
    assert [len(val & set(c["patients"])) for c in found["cohorts"].values()] == [1, 1, 1]
    assert found["split_stratified_by_grade"]
    for path in manifest.shard_paths(summary.dataset_dir, found, "val"):
        import tensorflow as tf

        for raw in tf.data.TFRecordDataset(path, compression_type="GZIP"):
            record = schema.decode(raw.numpy())
            assert record.cohort == next(n for n, c in found["cohorts"].items() if record.patient_id in c["patients"])


def test_a_gli_2024_model_has_five_outputs_and_records_its_challenge(tmp_path):
    """Dataset -> trainer -> predictor: the class count and the numbering come from the challenge."""
    from configs.train import tiny_cpu
    from trainer import training

    write("brats2024_gli", tmp_path / "cohort", n=3)
    cfg = override(challenge_config.get_config("brats2024_gli"),
                   {"n4.enabled": False, "min_brain_voxels": 200, "crop.size": (32, 32, 32),
                    "split.val_fraction": 0.34}).to_dict()
    summary = launch.run(cfg, str(tmp_path / "cohort"), str(tmp_path / "data"), IN_PROCESS, echo=lambda *_: None)
    train_cfg = tiny_cpu.get_config()
    train_cfg.data_dir = summary.dataset_dir
    train_cfg.patch_size = (16, 16, 16)
    train_cfg.epochs, train_cfg.steps_per_epoch = 1, 1
    train_cfg.target, train_cfg.deep_supervision = "classes", False  # one softmax output per GLI 2024 class
    outcome = training.train_and_evaluate(train_cfg, str(tmp_path / "run"), echo=lambda *_: None)
    lineage = json.loads((tmp_path / "run" / "lineage.json").read_text())
    assert lineage["challenge"] == "brats2024_gli" and lineage["num_classes"] == 5
    assert "val_dice_rc" in outcome.val_metrics
    predictor = predictor_lib.load_predictor(outcome.model_path, window="volume")
    assert predictor.model.output_shape[-1] == 5 and predictor.challenge.name == "brats2024_gli"
    folder = tmp_path / "cohort" / challenges.get("brats2024_gli").patient_id(1)
    source, convention = inputs.source_from_folder(str(folder), predictor)
    assert convention == "brats2024_post"
    report = outputs.volumes_report(prediction.predict_patient(predictor, source, convention), predictor)
    assert report["labels"] == {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}
    assert {"WT", "TC", "ET", "NETC", "SNFH", "RC"} <= set(report["volumes_ml"])
