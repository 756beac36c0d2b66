"""The dataset manifest: what a dataset version holds and how to check it.

A version directory ``<output_dir>/<name>/<version_id>/`` holds shards,
``errors.jsonl`` and ``manifest.json``.  The manifest is written last, so its
presence marks a complete version, and it is deterministic (no timestamps),
so its own checksum identifies the data a model was trained on.

``version_id`` fingerprints everything that decides the bytes: the checksums
of every input file, the preprocessing config, the schema version, and the
source files and library versions of the code that writes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath

from shared import storage
from shared.storage import join, read_bytes, sha256_of, write_bytes
from shared.schema import SCHEMA_VERSION

MANIFEST_NAME = "manifest.json"
RUN_NAME = "run.json"  # facts of one run that are not part of the version (timings, where the input lay)
ERRORS_NAME = "errors.jsonl"
FORMAT = "brats-tfrecord-dataset/1"
SPLITS = ("train", "val")


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def version_id(input_checksums: dict, config: dict, code: dict) -> str:
    """16 hex digits of sha256 over inputs, config, schema and the code that shapes the bytes.

    ``code`` is the engine's fingerprint of its own source files and of the
    library versions that change the output (``beam_pipeline.fingerprint``).
    """
    payload = canonical_json(
        {
            "inputs": input_checksums,
            "config": config,
            "schema_version": SCHEMA_VERSION,
            "code": code,
        }
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# Shard compression (``config.shards.compression``, ``manifest.record.compression``)
# -> file extension.  GZIP shards are ~3.6x smaller; uncompressed ones spare
# the reader the inflate (about a third of the input pipeline's CPU time).
COMPRESSIONS = {"GZIP": ".tfrecord.gz", "NONE": ".tfrecord"}
DEFAULT_COMPRESSION = "GZIP"


def check_compression(compression: str) -> str:
    """The canonical name ("GZIP" or "NONE"); ValueError for anything else."""
    name = str(compression).upper()
    if name not in COMPRESSIONS:
        raise ValueError(f"shards.compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    return name


def shard_name(split: str, index: int, count: int, compression: str = DEFAULT_COMPRESSION) -> str:
    return f"{split}-{index:05d}-of-{count:05d}{COMPRESSIONS[check_compression(compression)]}"


def record_compression(manifest: dict) -> str:
    """How the version's shards are compressed ("GZIP" or "NONE"; manifests before the option say GZIP)."""
    return check_compression(manifest.get("record", {}).get("compression", DEFAULT_COMPRESSION))


def tf_compression_type(compression: str) -> str:
    """``compression_type`` for ``tf.data.TFRecordDataset`` / ``tf.io.TFRecordOptions``."""
    return "" if check_compression(compression) == "NONE" else "GZIP"


def manifest_path(dataset_dir: str) -> str:
    return join(dataset_dir, MANIFEST_NAME)


def is_complete(dataset_dir: str) -> bool:
    return storage.exists(manifest_path(dataset_dir))


def write_manifest(dataset_dir: str, manifest: dict) -> None:
    write_bytes(manifest_path(dataset_dir), (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def read_run(dataset_dir: str) -> dict:
    """The dataset's ``run.json`` (where its raw scans lay, timings); empty when it has none."""
    path = join(dataset_dir, RUN_NAME)
    return json.loads(storage.read_bytes(path)) if storage.exists(path) else {}


def read_manifest(dataset_dir: str) -> dict:
    path = manifest_path(dataset_dir)
    if not storage.exists(path):
        raise FileNotFoundError(f"{path} not found: not a dataset version directory, or its run did not finish")
    manifest = json.loads(read_bytes(path))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def manifest_sha256(dataset_dir: str) -> str:
    return hashlib.sha256(read_bytes(manifest_path(dataset_dir))).hexdigest()


def shard_paths(dataset_dir: str, manifest: dict, split: str) -> list[str]:
    return [join(dataset_dir, s["file"]) for s in manifest["splits"][split]["shards"]]


@dataclasses.dataclass
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def verify(dataset_dir: str, manifest: dict | None = None) -> list[Problem]:
    """Every way the directory differs from its manifest (empty list: it verifies).

    Checks each listed shard's size and sha256, the patient and record counts,
    and that no shard file lies there that the manifest does not list.
    """
    try:
        manifest = manifest or read_manifest(dataset_dir)
    except (FileNotFoundError, ValueError) as exc:
        return [Problem(manifest_path(dataset_dir), str(exc))]
    problems: list[Problem] = []
    listed = set()
    for split, info in manifest["splits"].items():
        records = 0
        for shard in info["shards"]:
            path = join(dataset_dir, shard["file"])
            listed.add(shard["file"])
            records += shard["records"]
            if not storage.exists(path):
                problems.append(Problem(path, "listed in the manifest but missing"))
                continue
            size = storage.size(path)
            if size != shard["bytes"]:
                problems.append(Problem(path, f"{size} bytes, manifest says {shard['bytes']}"))
            elif sha256_of(path) != shard["sha256"]:
                problems.append(Problem(path, "sha256 differs from the manifest"))
        if records != len(info["patients"]):
            problems.append(Problem(dataset_dir, f"{split}: {records} records for {len(info['patients'])} patients"))
    pattern = join(dataset_dir, "*.tfrecord*")
    for entry in storage.match(pattern):
        if posixpath.basename(entry.path) not in listed:
            problems.append(Problem(entry.path, "shard not listed in the manifest"))
    return problems
