"""Deterministic shards: membership and order depend only on patient ids.

``WriteToTFRecord(num_shards=N)`` gives no reproducible membership or order,
so each patient's salted hash picks a range of the hash space (its shard) and
orders it within; the shard is written under a temporary name and renamed,
so a crash never leaves a half-written file under a final name (temporary
files live in the staging area, which a finished run clears).

Each patient's record is staged already framed and compressed as it will
lie in its shard (``shared.tfrecord.shard_piece``, made by the worker that
preprocessed the patient, in parallel with the others), so writing a shard
only joins files: no compression in the job's serial tail, and no
TensorFlow.  The shard streams straight to its place through
``shared.storage`` (Beam's ``FileSystems`` for gs://, s3://, azfs://), its
sha256 and size computed in the same pass.
"""

from __future__ import annotations

import hashlib
import uuid

from shared import storage
from shared.manifest import DEFAULT_COMPRESSION, shard_name
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
    """Join staged shard pieces (sorted by key) into one shard; returns its manifest entry.

    The pieces must have been made for ``compression`` (it names the file):
    GZIP pieces are gzip members, which readers take as one stream.
    """
    name = shard_name(split, index, count, compression)
    final = join(dataset_dir, name)
    temp = join(staging_dir, f"{uuid.uuid4().hex}-{name}")  # cleared with the staging area
    digest, size = hashlib.sha256(), 0
    with storage.open_write(temp) as out:
        for _, path in sorted(staged):
            piece = read_bytes(path)
            digest.update(piece)
            out.write(piece)
            size += len(piece)
    storage.rename(temp, final)
    return {"split": split, "index": index, "file": name, "records": len(staged), "bytes": size,
            "sha256": digest.hexdigest()}
