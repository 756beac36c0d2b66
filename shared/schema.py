"""The TFRecord schema: one ``tf.train.Example`` per patient.

This module is the only code that writes or parses records, on both sides
(Beam workers serialise with :func:`encode`, without TensorFlow; ``tf.data``
parses with :func:`parse_tf`; tests and tools read with :func:`decode`).

Layout of a record:
  patient_id, grade, label_convention, cohort   bytes
  channels                              bytes list, modality names in channel order
  image        raw float16, channels-last, C order;  image_shape [D, H, W, C]
  mask         raw uint8 one-hot, channels-last;     mask_shape  [D, H, W, K]
               (K: the challenge's classes, background included)
  crop_box     int64 [6]: start/stop per axis in the preprocessing grid
  grid_shape   int64 [3]: the preprocessing grid (the source grid, or the
               resampled one for native-space cohorts); spacing raw float64 [3] mm
  original_shape int64 [3]; affine raw float64 [4, 4] of the source volume
  source_files bytes list (basenames) with source_sha256 bytes list, aligned
  schema_version int64
float16 halves the bytes of float32 at ~1e-3 relative precision, far below
the noise of z-scored MRI; uint8 one-hot is a quarter of float32 one-hot.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shared import tfrecord

SCHEMA_VERSION = 2  # 2: cohort, grid_shape and spacing (version 1 records still decode)
IMAGE_DTYPE = np.float16
MASK_DTYPE = np.uint8


@dataclasses.dataclass
class PatientRecord:
    patient_id: str
    grade: str
    label_convention: str
    channels: tuple[str, ...]
    image: np.ndarray  # (D, H, W, C) float16
    mask: np.ndarray  # (D, H, W, K) uint8 one-hot
    crop_box: tuple[tuple[int, int], ...]
    original_shape: tuple[int, int, int]
    affine: np.ndarray  # (4, 4) float64
    source_files: tuple[str, ...]
    source_sha256: tuple[str, ...]
    grid_shape: tuple[int, int, int] | None = None  # None: the source grid (no resampling)
    spacing: tuple[float, float, float] | None = None  # mm of the preprocessing grid; None: the affine's
    cohort: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if self.grid_shape is None:
            self.grid_shape = tuple(int(s) for s in self.original_shape)
        if self.spacing is None:
            self.spacing = tuple(float(s) for s in np.sqrt((np.asarray(self.affine)[:3, :3] ** 2).sum(axis=0)))

    @property
    def resampled(self) -> bool:
        return tuple(self.grid_shape) != tuple(self.original_shape)


def _tf():
    import tensorflow as tf  # deferred: importing TF costs seconds

    return tf


def encode(record: PatientRecord) -> bytes:
    """Serialise to the bytes of ``tf.train.Example.SerializeToString(deterministic=True)``.

    Written by ``shared.tfrecord`` without TensorFlow, which the Beam
    workers then never import (it costs seconds of CPU per process).
    """
    image = np.ascontiguousarray(record.image, dtype=IMAGE_DTYPE)
    mask = np.ascontiguousarray(record.mask, dtype=MASK_DTYPE)
    if image.ndim != 4 or mask.ndim != 4 or image.shape[:3] != mask.shape[:3]:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be 4-D with equal grids")
    b, i = tfrecord.bytes_feature, tfrecord.int64_feature
    return tfrecord.example({
        "patient_id": b([record.patient_id.encode()]),
        "grade": b([record.grade.encode()]),
        "label_convention": b([record.label_convention.encode()]),
        "channels": b([c.encode() for c in record.channels]),
        "image": b([image.tobytes()]),
        "image_shape": i(image.shape),
        "mask": b([mask.tobytes()]),
        "mask_shape": i(mask.shape),
        "crop_box": i([v for pair in record.crop_box for v in pair]),
        "original_shape": i(record.original_shape),
        "affine": b([np.asarray(record.affine, dtype="<f8").tobytes()]),
        "grid_shape": i(record.grid_shape),
        "spacing": b([np.asarray(record.spacing, dtype="<f8").tobytes()]),
        "cohort": b([record.cohort.encode()]),
        "source_files": b([f.encode() for f in record.source_files]),
        "source_sha256": b([s.encode() for s in record.source_sha256]),
        "schema_version": i([record.schema_version]),
    })


def decode(serialized: bytes) -> PatientRecord:
    """Parse Example bytes into numpy arrays (for tools, tests and prediction)."""
    tf = _tf()
    feature = tf.train.Example.FromString(serialized).features.feature

    def raw(key):
        return feature[key].bytes_list.value

    def ints(key):
        return tuple(int(v) for v in feature[key].int64_list.value)

    version = ints("schema_version")[0]
    if version not in (1, SCHEMA_VERSION):
        raise ValueError(f"record schema version {version}, this code reads 1 and {SCHEMA_VERSION}")
    newer = version >= 2
    box = ints("crop_box")
    return PatientRecord(
        patient_id=raw("patient_id")[0].decode(),
        grade=raw("grade")[0].decode(),
        label_convention=raw("label_convention")[0].decode(),
        channels=tuple(c.decode() for c in raw("channels")),
        image=np.frombuffer(raw("image")[0], dtype=IMAGE_DTYPE).reshape(ints("image_shape")),
        mask=np.frombuffer(raw("mask")[0], dtype=MASK_DTYPE).reshape(ints("mask_shape")),
        crop_box=tuple((box[k], box[k + 1]) for k in range(0, 6, 2)),
        original_shape=ints("original_shape"),
        affine=np.frombuffer(raw("affine")[0], dtype="<f8").reshape(4, 4),
        source_files=tuple(f.decode() for f in raw("source_files")),
        source_sha256=tuple(s.decode() for s in raw("source_sha256")),
        grid_shape=ints("grid_shape") if newer else None,
        spacing=tuple(np.frombuffer(raw("spacing")[0], dtype="<f8").tolist()) if newer else None,
        cohort=raw("cohort")[0].decode() if newer else "",
        schema_version=version,
    )


def feature_spec():
    """``tf.io.parse_single_example`` spec for the fields training needs."""
    tf = _tf()
    return {
        "patient_id": tf.io.FixedLenFeature([], tf.string),
        "grade": tf.io.FixedLenFeature([], tf.string),
        "image": tf.io.FixedLenFeature([], tf.string),
        "image_shape": tf.io.FixedLenFeature([4], tf.int64),
        "mask": tf.io.FixedLenFeature([], tf.string),
        "mask_shape": tf.io.FixedLenFeature([4], tf.int64),
        "schema_version": tf.io.FixedLenFeature([], tf.int64),
    }


def parse_tf(serialized, image_dtype="float32"):
    """Graph-mode parse for ``tf.data``: image as ``image_dtype`` (float32; "float16" keeps the stored
    values uncast, for pipelines that crop before casting), mask as uint8."""
    tf = _tf()
    parsed = tf.io.parse_single_example(serialized, feature_spec())
    image = tf.reshape(tf.io.decode_raw(parsed["image"], tf.float16), parsed["image_shape"])
    if tf.as_dtype(image_dtype) != tf.float16:
        image = tf.cast(image, image_dtype)
    mask = tf.reshape(tf.io.decode_raw(parsed["mask"], tf.uint8), parsed["mask_shape"])
    return {"patient_id": parsed["patient_id"], "grade": parsed["grade"], "image": image, "mask": mask}
