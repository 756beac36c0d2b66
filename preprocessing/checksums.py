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
    """The checksum of a file computed from its bytes (streamed, never held whole)."""
    digest = hashlib.md5(usedforsecurity=False)
    for block in storage.iter_chunks(path):
        digest.update(block)
    return f"{KIND}:{digest.hexdigest()}"


def stored(prefix: str) -> dict[str, str]:
    """Checksums the object store keeps for every object under ``prefix``: path -> "md5:<hex>".

    On GCS one listing returns the MD5 of up to 1,000 objects per request, so
    a cohort of 10,000 files costs ~10 requests and no download.  Objects
    without an MD5 (composite uploads) are left out, as is every other
    filesystem: their checksums are computed from the bytes.
    """
    if not prefix.startswith("gs://"):
        return {}
    from apache_beam.io.gcp import gcsio  # deferred: only gs:// inputs need it

    bucket, name = gcsio.parse_gcs_path(prefix.rstrip("/") + "/", object_optional=True)
    client = gcsio.GcsIO().client
    found = {}
    for blob in client.list_blobs(bucket, prefix=name):
        if blob.md5_hash:
            found[f"gs://{bucket}/{blob.name}"] = f"{KIND}:{binascii.hexlify(base64.b64decode(blob.md5_hash)).decode()}"
    return found
