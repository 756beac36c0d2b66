"""Deterministic shards: membership and order depend only on patient ids.

``WriteToTFRecord(num_shards=N)`` gives no reproducible membership or order,
so each patient's salted hash picks a range of the hash space (its shard) and
orders it within; the shard is written under a temporary name and renamed,
so a crash never leaves a half-written file under a final name (temporary
files live in the staging area, which a finished run clears).

TensorFlow's record writer only reaches the object stores its own C++
client knows (and no emulator), so a shard is written to a local temporary
file and copied to its place through ``shared.storage`` (Beam's
``FileSystems`` for gs://, s3://, azfs://); its sha256 is computed in the
same pass.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid

from shared import storage
from shared.manifest import DEFAULT_COMPRESSION, shard_name, tf_compression_type
from shared.storage import join, read_bytes

SALT = b"brats-shards/1:"
HASH_BITS = 128


def shard_key(patient_id: str) -> int:
    return int.from_bytes(hashlib.sha256(SALT + patient_id.encode()).digest()[:16], "big")


def shard_index(key: int, num_shards: int) -> int:
    return (key * num_shards) >> HASH_BITS


def num_shards(num_patients: int, bytes_per_patient: int, target_bytes: int) -> int:
    """Enough shards that each holds about ``target_bytes`` of raw records."""
    return max(1, -(-num_patients * bytes_per_patient // target_bytes))


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
    handle, local = tempfile.mkstemp(suffix=name)
    os.close(handle)
    try:
        options = tf.io.TFRecordOptions(compression_type=tf_compression_type(compression))
        with tf.io.TFRecordWriter(local, options=options) as writer:
            for _, path in sorted(staged):
                writer.write(read_bytes(path))
        digest = storage.upload(local, temp)
        size = os.path.getsize(local)
    finally:
        os.remove(local)
    storage.rename(temp, final)
    return {"split": split, "index": index, "file": name, "records": len(staged), "bytes": size, "sha256": digest}
