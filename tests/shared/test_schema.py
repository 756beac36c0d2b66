"""The record schema round-trips through numpy and through tf.data parsing."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from shared import labels, schema


def _record():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 4, size=(8, 9, 10)).astype(np.uint8)
    affine = np.array([[-1, 0, 0, 0.25], [0, -1, 0, 239], [0, 0, 1, 0.1], [0, 0, 0, 1]], float)
    return schema.PatientRecord(
        patient_id="BraTS20_Training_007", grade="LGG", label_convention="brats2020",
        channels=("flair", "t1ce", "t2"),
        image=rng.normal(size=(8, 9, 10, 3)).astype(np.float16), mask=labels.one_hot(classes, 4),
        crop_box=((48, 56), (48, 57), (5, 15)), original_shape=(240, 240, 155), affine=affine,
        source_files=("a_flair.nii.gz", "a_seg.nii.gz"), source_sha256=("ab" * 32, "cd" * 32),
    )


def test_numpy_round_trip_is_exact():
    record = _record()
    back = schema.decode(schema.encode(record))
    for field in ("patient_id", "grade", "label_convention", "channels", "crop_box", "original_shape",
                  "source_files", "source_sha256", "schema_version"):
        assert getattr(back, field) == getattr(record, field), field
    assert back.image.dtype == np.float16 and np.array_equal(back.image, record.image)
    assert back.mask.dtype == np.uint8 and np.array_equal(back.mask, record.mask)
    assert np.array_equal(back.affine, record.affine)


def test_encoding_is_deterministic():
    assert schema.encode(_record()) == schema.encode(_record())


def test_tf_parse_matches_numpy_decode():
    record = _record()
    parsed = schema.parse_tf(tf.constant(schema.encode(record)))
    assert parsed["patient_id"].numpy().decode() == record.patient_id
    assert parsed["image"].dtype == tf.float32
    np.testing.assert_array_equal(parsed["image"].numpy(), record.image.astype(np.float32))
    np.testing.assert_array_equal(parsed["mask"].numpy(), record.mask)


def test_tf_parse_can_keep_the_stored_float16():
    record = _record()
    parsed = schema.parse_tf(tf.constant(schema.encode(record)), image_dtype=tf.float16)
    assert parsed["image"].dtype == tf.float16
    np.testing.assert_array_equal(parsed["image"].numpy(), record.image)


def test_a_newer_schema_version_is_refused():
    data = schema.encode(dataclasses.replace(_record(), schema_version=99))
    try:
        schema.decode(data)
    except ValueError as exc:
        assert "schema version 99" in str(exc)
    else:
        raise AssertionError("decode accepted an unknown schema version")



def _tf_example_bytes(record) -> bytes:
    """The record serialised by TensorFlow's own protobuf classes, as ``schema.encode`` did before."""
    def b(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))

    def i(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    features = {
        "patient_id": b([record.patient_id.encode()]), "grade": b([record.grade.encode()]),
        "label_convention": b([record.label_convention.encode()]), "channels": b([c.encode() for c in record.channels]),
        "image": b([np.ascontiguousarray(record.image, np.float16).tobytes()]), "image_shape": i(record.image.shape),
        "mask": b([np.ascontiguousarray(record.mask, np.uint8).tobytes()]), "mask_shape": i(record.mask.shape),
        "crop_box": i([v for pair in record.crop_box for v in pair]), "original_shape": i(record.original_shape),
        "affine": b([np.asarray(record.affine, dtype="<f8").tobytes()]),
        "grid_shape": i(record.grid_shape), "spacing": b([np.asarray(record.spacing, dtype="<f8").tobytes()]),
        "cohort": b([record.cohort.encode()]),
        "source_files": b([f.encode() for f in record.source_files]),
        "source_sha256": b([s.encode() for s in record.source_sha256]), "schema_version": i([record.schema_version]),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def test_encode_gives_tensorflows_example_bytes_for_a_preprocessed_record(tiny_dataset):
    from shared import manifest as manifest_lib

    m = manifest_lib.read_manifest(tiny_dataset.dataset_dir)
    (path, *_) = manifest_lib.shard_paths(tiny_dataset.dataset_dir, m, "train")
    raw = next(iter(tf.data.TFRecordDataset(path, compression_type="GZIP"))).numpy()
    record = schema.decode(raw)
    assert record.image.size > 0 and record.mask.size > 0
    assert schema.encode(record) == _tf_example_bytes(record) == raw


@pytest.mark.parametrize("changes", [
    {},
    {"source_files": (), "source_sha256": ()},  # empty lists
    {"crop_box": ((-3, 0), (0, 127), (128, 2**62)), "schema_version": -1},  # negative and multi-byte varints
    {"mask": np.zeros((8, 9, 10, 0), np.uint8)},  # an unlabelled patient: no classes
], ids=["record", "empty_lists", "varints", "no_classes"])
def test_encode_gives_tensorflows_example_bytes_at_the_edges(changes):
    record = dataclasses.replace(_record(), **changes)
    assert schema.encode(record) == _tf_example_bytes(record)
