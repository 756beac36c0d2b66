"""The record schema round-trips through numpy and through tf.data parsing."""

import numpy as np
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
    data = schema.encode(dataclass_replace(_record(), schema_version=99))
    try:
        schema.decode(data)
    except ValueError as exc:
        assert "schema version 99" in str(exc)
    else:
        raise AssertionError("decode accepted an unknown schema version")


def dataclass_replace(record, **changes):
    import dataclasses

    return dataclasses.replace(record, **changes)
