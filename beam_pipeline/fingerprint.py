"""The code part of a dataset's version id, computed from the code itself.

A version id must change whenever the bytes of a dataset could change.  The
inputs and the config are fingerprinted by the launcher; this module adds the
rest: the source of every module that shapes a record or a shard (read from
the files Python imports, so no one has to remember to bump a number) and the
versions of the libraries that compute or write them.  Modules that only read
datasets back (metrics, the catalogue, verification) are left out, so editing
them does not force a cohort to be preprocessed again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import platform
import zlib

# Modules whose code decides the bytes of records, shards, manifest or errors.jsonl.
BYTE_SHAPING_MODULES = (
    "preprocessing.discovery",
    "preprocessing.n4",
    "preprocessing.patient",
    "shared.challenges",
    "shared.labels",
    "shared.layouts",
    "shared.manifest",
    "shared.failures",
    "shared.geometry",
    "shared.nifti_io",
    "shared.schema",
    "shared.tfrecord",
    "shared.spec",
    "shared.volume_ops",
    "beam_pipeline.launch",
    "beam_pipeline.pipeline",
    "beam_pipeline.sharding",
    "beam_pipeline.splits",
    "beam_pipeline.staging",
)
# Distributions whose version can change the numbers (ITK inside antspyx, numpy's
# maths, nibabel's scaling, scikit-learn's splits).  Records and shards are written
# by shared.tfrecord, so TensorFlow and protobuf no longer shape the bytes (nor
# need to be on the workers); the zlib that compresses GZIP shards does.
BYTE_SHAPING_LIBRARIES = ("antspyx", "numpy", "nibabel", "scikit-learn")


def module_digest(name: str) -> str:
    """sha256 of a module's source file, as Python would import it now."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin:
        raise ImportError(f"cannot find the source of {name} to fingerprint it")
    with open(spec.origin, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of the byte-shaping libraries (absent ones left out), Python's and zlib's."""
    versions = {"python": ".".join(platform.python_version_tuple()[:2]), "zlib": zlib.ZLIB_RUNTIME_VERSION}
    for name in BYTE_SHAPING_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def code_fingerprint() -> dict:
    """``{"sources": sha256 over the byte-shaping modules, "libraries": {name: version}}``."""
    digest = hashlib.sha256()
    for name in BYTE_SHAPING_MODULES:
        digest.update(f"{name}:{module_digest(name)}\n".encode())
    return {"sources": digest.hexdigest(), "libraries": library_versions()}


def check_worker_libraries(expected: dict[str, str]) -> None:
    """Fail the job when a worker's libraries differ from the launcher's.

    The version id was computed from the launcher's environment; records made
    with another ITK or numpy would carry that id without matching it.
    """
    found = library_versions()
    differ = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
    if differ:
        lines = ", ".join(f"{k}: launcher {a}, worker {b}" for k, (a, b) in sorted(differ.items()))
        raise RuntimeError(f"worker libraries differ from the launcher's ({lines}); install the same "
                           "versions on the workers (constraints.txt, or the Dockerfile's SDK container)")
