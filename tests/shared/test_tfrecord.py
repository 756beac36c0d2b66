"""Shards written without TensorFlow read back with tf.data, byte for byte as TFRecordWriter writes."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from beam_pipeline import sharding
from shared import schema, tfrecord
from shared.manifest import tf_compression_type
from tests.helpers import ROOT
from tests.shared.test_schema import _record


def _records(n: int) -> list[schema.PatientRecord]:
    return [dataclasses.replace(_record(), patient_id=f"P{i:02d}") for i in range(n)]


def _stage(folder: pathlib.Path, records, compression: str) -> list[tuple[int, str]]:
    """Pieces staged as the workers stage them: (shard key, path)."""
    staged = []
    for record in records:
        path = folder / f"{record.patient_id}.record"
        path.write_bytes(tfrecord.shard_piece(schema.encode(record), compression))
        staged.append((sharding.shard_key(record.patient_id), str(path)))
    return staged


def _write(tmp_path: pathlib.Path, name: str, records, compression: str) -> tuple[dict, pathlib.Path]:
    out, staging = tmp_path / name, tmp_path / name / "_staging"
    staging.mkdir(parents=True)
    staged = _stage(staging, records, compression)
    entry = sharding.write_shard(str(out), str(staging), "train", 0, 1, list(reversed(staged)), compression)
    return entry, out / entry["file"]


@pytest.mark.parametrize("compression", ["GZIP", "NONE"])
def test_a_shard_reads_back_with_tf_data_in_key_order_and_is_reproducible(tmp_path, compression):
    records = _records(3)
    entry, path = _write(tmp_path, "a", records, compression)
    parsed = [schema.parse_tf(r) for r in tf.data.TFRecordDataset(str(path), tf_compression_type(compression))]
    by_key = sorted(records, key=lambda r: sharding.shard_key(r.patient_id))
    assert [p["patient_id"].numpy().decode() for p in parsed] == [r.patient_id for r in by_key]
    for p, record in zip(parsed, by_key):
        np.testing.assert_array_equal(p["image"].numpy(), record.image.astype(np.float32))
        np.testing.assert_array_equal(p["mask"].numpy(), record.mask)
    assert entry["records"] == 3 and entry["bytes"] == path.stat().st_size
    again, again_path = _write(tmp_path, "b", records, compression)
    assert again_path.read_bytes() == path.read_bytes() and again["sha256"] == entry["sha256"]


@pytest.mark.parametrize("compression", ["GZIP", "NONE"])
def test_one_record_is_framed_and_compressed_as_tfrecordwriter_does(tmp_path, compression):
    data = schema.encode(_record())
    path = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(path), tf.io.TFRecordOptions(compression_type=tf_compression_type(compression))) as w:
        w.write(data)
    assert tfrecord.shard_piece(data, compression) == path.read_bytes()


def test_a_corrupted_piece_fails_the_crc_check_when_read(tmp_path):
    _, path = _write(tmp_path, "a", _records(1), "NONE")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))


def test_the_workers_path_never_imports_tensorflow(tiny_cohort, tmp_path):
    # Preprocess -> encode -> stage -> write a shard, as a Beam worker runs it, in a fresh interpreter.
    code = f"""
import json, sys
from beam_pipeline import sharding, staging
from preprocessing import discovery
from shared import layouts
from tests.helpers import tiny_config
cfg = {{k: v for k, v in tiny_config().items() if k != "runtime"}}
source = discovery.discover({str(tiny_cohort)!r}, layouts.get_layout(cfg["layout"]), tuple(cfg["modalities"])).patients[0]
outcome = staging.process_patient(source, cfg, {str(tmp_path / "_staging")!r})
entry = sharding.write_shard({str(tmp_path)!r}, {str(tmp_path / "_staging")!r}, "train", 0, 1,
                             [(0, outcome["staged"])], cfg["shards"]["compression"])
print(json.dumps({{"file": entry["file"], "patient": source.patient_id,
                  "tensorflow": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))}}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["tensorflow"] == []
    (raw,) = list(tf.data.TFRecordDataset(str(tmp_path / result["file"]), compression_type="GZIP"))
    assert schema.decode(raw.numpy()).patient_id == result["patient"]


@pytest.mark.parametrize("value", [-(1 << 63), (1 << 63) - 1])
def test_int64_limits_encode_as_tensorflow_does(value):
    theirs = tf.train.Feature(int64_list=tf.train.Int64List(value=[value])).SerializeToString()
    assert b"".join(tfrecord.int64_feature([value])) == theirs


@pytest.mark.parametrize("value", [-(1 << 63) - 1, 1 << 63])
def test_a_value_beyond_int64_is_refused(value):
    with pytest.raises(ValueError, match="int64"):
        tfrecord.int64_feature([value])
