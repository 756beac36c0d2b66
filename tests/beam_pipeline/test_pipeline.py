"""The Beam job end to end on tiny synthetic cohorts."""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from beam_pipeline import catalog, sharding, splits
from shared import labels, manifest as manifest_lib, schema, volume_ops
from tests.helpers import MULTI_PROCESS, ROOT, run_pipeline


def _records(dataset_dir) -> dict[str, schema.PatientRecord]:
    m = manifest_lib.read_manifest(str(dataset_dir))
    out = {}
    for split in ("train", "val"):
        for path in manifest_lib.shard_paths(str(dataset_dir), m, split):
            for raw in tf.data.TFRecordDataset(path, manifest_lib.tf_compression_type(
                    manifest_lib.record_compression(m))):
                record = schema.decode(raw.numpy())
                out[record.patient_id] = record
    return out


def _shard_bytes(dataset_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(dataset_dir).glob("*.tfrecord.gz"))}


def test_end_to_end_writes_every_patient_with_a_manifest(tiny_dataset, tiny_cohort):
    summary = tiny_dataset
    m = manifest_lib.read_manifest(summary.dataset_dir)
    assert summary.patients == {"train": 5, "val": 1} and summary.failures == []
    assert m["version_id"] == summary.version_id
    assert pathlib.Path(summary.dataset_dir).name == summary.version_id
    assert (pathlib.Path(summary.dataset_dir) / "errors.jsonl").read_text() == ""
    assert not (pathlib.Path(summary.dataset_dir) / "_staging").exists()
    assert set(m["code"]["libraries"]) >= {"python", "zlib", "antspyx", "numpy", "nibabel"}
    assert "tensorflow" not in m["code"]["libraries"]  # records are written without it
    assert len(m["code"]["sources"]) == 64
    assert len(m["inputs"]) == 6 and all(len(files) == 5 for files in m["inputs"].values())
    assert manifest_lib.verify(summary.dataset_dir) == []
    records = _records(summary.dataset_dir)
    assert sorted(records) == sorted(m["splits"]["train"]["patients"] + m["splits"]["val"]["patients"])


def test_records_hold_normalised_cropped_one_hot_data(tiny_dataset, tiny_cohort):
    for pid, record in _records(tiny_dataset.dataset_dir).items():
        assert record.image.shape == (32, 32, 32, 4) and record.mask.shape == (32, 32, 32, 4)
        assert record.channels == ("flair", "t1", "t1ce", "t2")
        assert (record.mask.sum(-1) == 1).all()
        seg_path = tiny_cohort / pid / f"{pid}_seg.nii.gz"
        seg = np.asarray(nib.load(seg_path).dataobj)
        classes = labels.to_classes(seg, "brats2020")
        restored = volume_ops.uncrop(record.mask.argmax(-1).astype(np.uint8), record.crop_box, record.original_shape)
        assert np.array_equal(restored, classes), "uncropped mask differs from the source labels"
        assert record.original_shape == seg.shape
        assert np.allclose(record.affine, nib.load(seg_path).affine)
        brain = volume_ops.crop(volume_ops.nonzero_brain_mask(
            [np.asarray(nib.load(tiny_cohort / pid / f"{pid}_{m}.nii.gz").dataobj) for m in record.channels]),
            record.crop_box)
        image = record.image.astype(np.float32)
        for c in range(4):
            assert abs(image[..., c][brain].mean()) < 0.02 and abs(image[..., c][brain].std() - 1) < 0.02
            assert (image[..., c][~brain] == 0).all()
        digest = hashlib.sha256((tiny_cohort / pid / f"{pid}_flair.nii.gz").read_bytes()).hexdigest()
        assert digest in record.source_sha256


def test_rerun_is_deterministic_and_a_complete_version_is_reused(tiny_cohort, tiny_dataset, tmp_path):
    again = run_pipeline(tiny_cohort, tmp_path)
    assert again.version_id == tiny_dataset.version_id
    assert _shard_bytes(again.dataset_dir) == _shard_bytes(tiny_dataset.dataset_dir)
    manifest_file = pathlib.Path(again.dataset_dir) / "manifest.json"
    before = manifest_file.stat().st_mtime_ns
    reused = run_pipeline(tiny_cohort, tmp_path)
    assert reused.already_complete and manifest_file.stat().st_mtime_ns == before


def test_multi_process_run_gives_the_same_bytes(tiny_cohort, tiny_dataset, tmp_path):
    multi = run_pipeline(tiny_cohort, tmp_path, beam_args=MULTI_PROCESS)
    assert multi.version_id == tiny_dataset.version_id
    assert _shard_bytes(multi.dataset_dir) == _shard_bytes(tiny_dataset.dataset_dir)
    assert (pathlib.Path(multi.dataset_dir) / "manifest.json").read_bytes() == \
        (pathlib.Path(tiny_dataset.dataset_dir) / "manifest.json").read_bytes()


def test_config_change_gives_a_new_version_and_versions_lists_the_difference(tiny_cohort, tiny_dataset, tmp_path):
    shutil.copytree(tiny_dataset.dataset_dir, tmp_path / "synthetic" / tiny_dataset.version_id)
    three = run_pipeline(tiny_cohort, tmp_path, modalities=("flair", "t1ce", "t2"))
    assert three.version_id != tiny_dataset.version_id
    assert _records(three.dataset_dir)["BraTS20_Training_001"].image.shape[-1] == 3
    text = catalog.format_versions(str(tmp_path))
    assert tiny_dataset.version_id in text and three.version_id in text
    assert "modalities" in text
    cli = subprocess.run([sys.executable, "-m", "beam_pipeline.versions", f"--output_dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    assert three.version_id in cli.stdout


def test_more_shards_split_the_patients_deterministically(tiny_cohort, tmp_path):
    summary = run_pipeline(tiny_cohort, tmp_path, **{"shards.target_mb": 0.7})
    m = manifest_lib.read_manifest(summary.dataset_dir)
    train_shards = m["splits"]["train"]["shards"]
    assert len(train_shards) == 3
    assert [s["file"] for s in train_shards] == [f"train-0000{i}-of-00003.tfrecord.gz" for i in range(3)]
    assert sum(s["records"] for s in train_shards) == 5
    for i, shard in enumerate(train_shards):  # each patient sits in the shard its hash picks
        ids = [schema.decode(r.numpy()).patient_id for r in tf.data.TFRecordDataset(
            str(pathlib.Path(summary.dataset_dir) / shard["file"]), compression_type="GZIP")]
        keys = [sharding.shard_key(p) for p in ids]
        assert keys == sorted(keys) and all(sharding.shard_index(k, 3) == i for k in keys)


def test_uncompressed_shards_hold_the_same_records_under_another_version(tiny_dataset, tiny_cohort, tmp_path):
    plain = run_pipeline(tiny_cohort, tmp_path, **{"shards.compression": "NONE"})
    assert plain.version_id != tiny_dataset.version_id
    m = manifest_lib.read_manifest(plain.dataset_dir)
    assert m["record"]["compression"] == "NONE" and m["config"]["shards"]["compression"] == "NONE"
    assert manifest_lib.read_manifest(tiny_dataset.dataset_dir)["record"]["compression"] == "GZIP"
    files = [s["file"] for split in m["splits"].values() for s in split["shards"]]
    assert files and all(f.endswith(".tfrecord") for f in files)
    assert manifest_lib.verify(plain.dataset_dir) == []
    ok = subprocess.run([sys.executable, "-m", "beam_pipeline.verify", f"--dataset_dir={plain.dataset_dir}"],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    gzip_records, plain_records = _records(tiny_dataset.dataset_dir), _records(plain.dataset_dir)
    assert sorted(plain_records) == sorted(gzip_records)
    for pid, record in plain_records.items():
        assert schema.encode(record) == schema.encode(gzip_records[pid])
    gz_bytes = sum(s["bytes"] for split in manifest_lib.read_manifest(tiny_dataset.dataset_dir)["splits"].values()
                   for s in split["shards"])
    assert sum(s["bytes"] for split in m["splits"].values() for s in split["shards"]) > gz_bytes


def test_an_unknown_shard_compression_is_refused_before_any_work(tiny_cohort, tmp_path):
    with pytest.raises(ValueError, match="shards.compression"):
        run_pipeline(tiny_cohort, tmp_path, **{"shards.compression": "ZSTD"})
    assert not (tmp_path / "synthetic").exists()


def test_verify_catches_changed_missing_and_extra_shards(tiny_dataset, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dataset.dataset_dir, copy)
    ok = subprocess.run([sys.executable, "-m", "beam_pipeline.verify", f"--dataset_dir={copy}"],
                        cwd=ROOT, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    shard = sorted(copy.glob("train-*.tfrecord.gz"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    (copy / "train-00099-of-00100.tfrecord.gz").write_bytes(b"")
    bad = subprocess.run([sys.executable, "-m", "beam_pipeline.verify", f"--dataset_dir={copy}"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "sha256 differs" in bad.stderr and "not listed in the manifest" in bad.stderr
    sorted(copy.glob("val-*.tfrecord.gz"))[0].unlink()
    assert any("missing" in p.reason for p in manifest_lib.verify(str(copy)))


def test_a_crash_while_writing_leaves_no_final_shard_and_the_rerun_resumes(tiny_cohort, tmp_path, monkeypatch):
    tight = {"crop.size": (24, 24, 24)}  # cuts tumour voxels: every patient gets a warning to keep
    clean = pathlib.Path(run_pipeline(tiny_cohort, tmp_path / "clean", **tight).dataset_dir)
    assert manifest_lib.read_manifest(str(clean))["warnings"], "the case needs warnings"
    real_rename = sharding.storage.rename

    def broken_rename(source, destination):
        if destination.endswith(".tfrecord.gz"):
            raise OSError("disk vanished")
        return real_rename(source, destination)

    monkeypatch.setattr(sharding.storage, "rename", broken_rename)
    with pytest.raises(Exception, match="disk vanished"):
        run_pipeline(tiny_cohort, tmp_path / "crashed", **tight)
    monkeypatch.undo()
    (dataset_dir,) = (tmp_path / "crashed" / "synthetic").iterdir()
    assert not list(dataset_dir.glob("*-of-*.tfrecord.gz")) and not (dataset_dir / "manifest.json").exists()
    resumed = run_pipeline(tiny_cohort, tmp_path / "crashed", **tight)
    assert resumed.run["patients_resumed"] == 6
    assert manifest_lib.verify(resumed.dataset_dir) == []
    # The resumed run wrote the same bytes as a clean run of the same version, warnings included.
    for name in ["manifest.json", "errors.jsonl"] + sorted(p.name for p in clean.glob("*.tfrecord.gz")):
        assert (pathlib.Path(resumed.dataset_dir) / name).read_bytes() == (clean / name).read_bytes(), name


def test_split_is_stratified_by_grade_and_folds_cover_training():
    grades = {f"P{i:02d}": ("LGG" if i < 5 else "HGG") for i in range(20)}
    plan = splits.split_patients(grades, 0.2, seed=1, num_folds=4)
    val = [p for p, s in plan.assignment.items() if s == "val"]
    assert plan.stratified and len(val) == 4 and sum(grades[p] == "LGG" for p in val) == 1
    assert splits.split_patients(grades, 0.2, seed=1, num_folds=4) == plan
    assert sorted(plan.folds) == sorted(p for p, s in plan.assignment.items() if s == "train")
    assert sorted(set(plan.folds.values())) == [0, 1, 2, 3]


def test_manifest_records_folds_when_asked(tiny_cohort, tmp_path):
    summary = run_pipeline(tiny_cohort, tmp_path, **{"split.num_folds": 2, "split.val_fraction": 0.0})
    m = manifest_lib.read_manifest(summary.dataset_dir)
    assert summary.patients == {"train": 6, "val": 0}
    assert sorted(set(m["folds"].values())) == [0, 1] and len(m["folds"]) == 6
    assert json.loads(json.dumps(m)) == m
