"""Input checksums: what a dataset version id says about each input file.

The launcher must fingerprint every input before the job starts, and a
cohort in a bucket (BraTS 2021: ~1,250 patients, tens of GB) must not be
downloaded to the launching machine for that.  Object stores keep an MD5 of
each object they hold (GCS: ``md5Hash``), so the fingerprint is the MD5 of a
file's bytes: read from the store's metadata where it keeps one, computed
from the bytes otherwise (local files, composite GCS objects).  Either way
the same bytes give the same string, so a cohort fingerprints the same on a
laptop and in a bucket.  The workers, which read every byte anyway, check
each file against its planned checksum (a file changed after launch fails
its patient) and store the SHA-256 of what they read in the record.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from shared import storage

KIND = "md5"


def of_bytes(data: bytes, kind: str = KIND) -> str:
    if kind != KIND:
        raise ValueError(f"unknown checksum kind {kind!r}")
    return f"{KIND}:{hashlib.md5(data, usedforsecurity=False).hexdigest()}"


def kind_of(checksum: str) -> str:
    return checksum.split(":", 1)[0]


def of_file(path: str) -> str:
    """The file's checksum: from the object store's metadata when it has one, else from its bytes."""
    stored = _stored_md5(path)
    if stored:
        return f"{KIND}:{stored}"
    digest = hashlib.md5(usedforsecurity=False)
    for block in storage.iter_chunks(path):
        digest.update(block)
    return f"{KIND}:{digest.hexdigest()}"


def _stored_md5(path: str) -> str | None:
    """Hex MD5 that GCS keeps for an object (None elsewhere, or for composite objects)."""
    if not path.startswith("gs://"):
        return None
    from apache_beam.io.gcp import gcsio  # deferred: only gs:// inputs need it

    encoded = gcsio.GcsIO().checksum_md5(path) if hasattr(gcsio.GcsIO, "checksum_md5") else None
    if encoded is None:
        blob = _gcs_blob(path)
        encoded = blob.md5_hash if blob is not None else None
    if not encoded:
        return None
    try:
        return binascii.hexlify(base64.b64decode(encoded)).decode()
    except (binascii.Error, ValueError):
        return None


def _gcs_blob(path: str):
    from apache_beam.io.gcp import gcsio

    io = gcsio.GcsIO()
    bucket, name = gcsio.parse_gcs_path(path)
    return io.client.bucket(bucket).get_blob(name)
