"""The one storage layer: every read, write, listing and rename of the project.

Paths with a scheme (``gs://``, ``s3://``, ``azfs://``) go through Apache
Beam's ``FileSystems``, which knows every object store whose extra is
installed.  Plain paths use Python's own file calls: that is all Beam's
``LocalFileSystem`` does for them, and it keeps Beam out of the processes
that only touch local files (interactive prediction, the web app, a GPU
machine without Beam).  Beam is imported the first time a remote path is
used, never at import.

Writes of whole files are atomic on local disks (temporary name, then
rename), so a crash never leaves a half-written file under its final name.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import hashlib
import os
import posixpath
import shutil
import uuid
from typing import BinaryIO, Iterator


@dataclasses.dataclass(frozen=True)
class Entry:
    """One matched file: its path and size in bytes."""

    path: str
    size: int


def is_remote(path: str) -> bool:
    return "://" in str(path)


def _fs():
    from apache_beam.io.filesystems import FileSystems  # deferred: only remote paths need Beam

    return FileSystems


def join(*parts: str) -> str:
    return _fs().join(*parts) if is_remote(parts[0]) else posixpath.join(*parts)


def open_read(path: str) -> BinaryIO:
    if is_remote(path):
        return _fs().open(path, compression_type="uncompressed")
    return open(path, "rb")


def read_bytes(path: str) -> bytes:
    with open_read(path) as handle:
        return handle.read()


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole file (atomically on a local disk)."""
    if is_remote(path):
        with _fs().create(path, compression_type="uncompressed") as handle:
            handle.write(data)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(temp, "wb") as handle:
        handle.write(data)
    os.replace(temp, path)


def open_write(path: str) -> BinaryIO:
    """A stream to write a file in pieces (not atomic: write under a temporary name, then ``rename``)."""
    if is_remote(path):
        return _fs().create(path, compression_type="uncompressed")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return open(path, "wb")


def sha256_of(path: str, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with open_read(path) as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def exists(path: str) -> bool:
    return _fs().exists(path) if is_remote(path) else os.path.exists(path)


def is_dir(path: str) -> bool:
    """A local directory, or a remote prefix that has objects under it."""
    if is_remote(path):
        return bool(match(join(path.rstrip("/"), "*")))
    return os.path.isdir(path)


def folder_problem(path: str) -> str | None:
    """Why ``path`` cannot be a folder to read ("does not exist; did you mean ...?", "is empty"), else None.

    A misspelt folder should read as a misspelling, not as "no patients found"; a local path gets
    its nearest sibling's name as the suggestion.
    """
    if is_remote(path):
        return None if is_dir(path) else f"{path} does not exist (or holds no objects)"
    if os.path.isdir(path):
        return None if os.listdir(path) else f"{path} is empty"
    if os.path.exists(path):
        return f"{path} is a file, not a folder"
    parent = os.path.dirname(os.path.abspath(path))
    siblings = [n for n in os.listdir(parent) if os.path.isdir(os.path.join(parent, n))] if os.path.isdir(parent) else []
    near = difflib.get_close_matches(os.path.basename(path.rstrip("/")), siblings, n=1)
    return f"{path} does not exist" + (f"; did you mean {os.path.join(os.path.dirname(path), near[0])}?" if near else "")


def list_dir(path: str) -> list[str]:
    """Paths of the files directly in a folder, sorted."""
    if is_remote(path):
        return sorted(e.path for e in match(join(path.rstrip("/"), "*")))
    return sorted(posixpath.join(path, n) for n in os.listdir(path))


def match(pattern: str) -> list[Entry]:
    """Files matching a glob (``*`` stays within one folder level), sorted by path."""
    if is_remote(pattern):
        result = _fs().match([pattern])[0]
        return sorted((Entry(m.path, m.size_in_bytes) for m in result.metadata_list), key=lambda e: e.path)
    return [Entry(p, os.path.getsize(p)) for p in sorted(glob.glob(pattern)) if os.path.isfile(p)]


def size(path: str) -> int:
    if is_remote(path):
        return _fs().match([path])[0].metadata_list[0].size_in_bytes
    return os.path.getsize(path)


def rename(src: str, dst: str) -> None:
    """Move a file, replacing ``dst`` if it exists."""
    if is_remote(src):
        if _fs().exists(dst):
            _fs().delete([dst])
        _fs().rename([src], [dst])
        return
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    os.replace(src, dst)


def delete(paths: list[str]) -> None:
    """Delete files (and local folders with what they hold); absent paths are ignored."""
    remote = [p for p in paths if is_remote(p)]
    if remote:
        present = [p for p in remote if _fs().exists(p)]
        if present:
            _fs().delete(present)
    for p in paths:
        if is_remote(p):
            continue
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)


def delete_tree(folder: str) -> None:
    """Everything under a folder (on an object store: every object below the prefix)."""
    if is_remote(folder):
        if match(join(folder.rstrip("/"), "*")):  # one prefix delete (batched), not one request per object
            _fs().delete([folder.rstrip("/") + "/"])
    else:
        delete([folder])


def makedirs(path: str) -> None:
    """Create a local folder; object stores have no folders, so nothing to do there."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def iter_chunks(path: str, chunk: int = 8 << 20) -> Iterator[bytes]:
    with open_read(path) as handle:
        while block := handle.read(chunk):
            yield block
