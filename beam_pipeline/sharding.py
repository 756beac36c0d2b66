"""Deterministic shards: membership and order depend only on patient ids.

``WriteToTFRecord(num_shards=N)`` gives no reproducible membership or order,
so each patient's salted hash picks a range of the hash space (its shard) and
orders it within; the shard is written under a temporary name and renamed,
so a crash never leaves a half-written file under a final name (temporary
files live in the staging area, which a finished run clears).
"""

from __future__ import annotations

import hashlib
import math
import uuid

from apache_beam.io.filesystems import FileSystems

from shared.manifest import DEFAULT_COMPRESSION, join, shard_name, tf_compression_type
from shared.nifti_io import read_bytes, sha256_of

SALT = b"brats-shards/1:"
HASH_BITS = 128


def shard_key(patient_id: str) -> int:
    return int.from_bytes(hashlib.sha256(SALT + patient_id.encode()).digest()[:16], "big")


def shard_index(key: int, num_shards: int) -> int:
    return (key * num_shards) >> HASH_BITS


def num_shards(num_patients: int, bytes_per_patient: int, target_bytes: int) -> int:
    """Enough shards that each holds about ``target_bytes`` of raw records."""
    return max(1, math.ceil(num_patients * bytes_per_patient / target_bytes))


def record_bytes_estimate(crop_size, channels: int, classes: int) -> int:
    """Upper bound of one serialised record: float16 image plus uint8 one-hot."""
    voxels = math.prod(int(s) for s in crop_size)
    return voxels * (2 * channels + classes) + 4096


def write_shard(dataset_dir: str, staging_dir: str, split: str, index: int, count: int,
                staged: list[tuple[int, str]], compression: str = DEFAULT_COMPRESSION) -> dict:
    """Concatenate staged records (sorted by key) into one TFRecord shard, GZIP or uncompressed.

    Returns the shard's manifest entry.  TFRecordWriter's gzip stream carries
    no timestamp, so equal records give equal bytes.
    """
    import tensorflow as tf

    name = shard_name(split, index, count, compression)
    final = join(dataset_dir, name)
    temp = join(staging_dir, f"{uuid.uuid4().hex}-{name}")  # cleared with the staging area
    with tf.io.TFRecordWriter(temp, options=tf.io.TFRecordOptions(compression_type=tf_compression_type(compression))) as writer:
        for _, path in sorted(staged):
            writer.write(read_bytes(path))
    if FileSystems.exists(final):
        FileSystems.delete([final])
    FileSystems.rename([temp], [final])
    size = FileSystems.match([final])[0].metadata_list[0].size_in_bytes
    return {"split": split, "index": index, "file": name, "records": len(staged),
            "bytes": size, "sha256": sha256_of(final)}
