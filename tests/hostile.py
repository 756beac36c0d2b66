"""Crafted hostile NIfTI files (issue 21), small on disk, shared by the reader, Beam, prediction,
evaluation and app tests.  Each is what an attacker or a broken copy can produce in a few MB."""

from __future__ import annotations

import gzip
import zlib

import nibabel as nib
import numpy as np


def header_bytes(shape, dtype=np.int16, bitpix: int | None = None, datatype: int | None = None) -> bytes:
    """A NIfTI-1 header (348 bytes + 4 extension bytes) declaring ``shape`` and ``dtype``, raw fields overridable."""
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header["dim"] = [len(shape)] + list(shape) + [1] * (7 - len(shape))
    header["pixdim"] = [1.0] * 8
    header["vox_offset"] = 352
    header["sform_code"] = 1
    if bitpix is not None:
        header["bitpix"] = bitpix
    if datatype is not None:
        header["datatype"] = datatype
    return header.binaryblock + b"\x00" * 4


def zeros_gz(head: bytes, zero_bytes: int, level: int = 9) -> bytes:
    """``head`` then ``zero_bytes`` zeros, gzipped (1 KB of output per ~1 byte at level 9)."""
    stream = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [stream.compress(head)]
    block = b"\x00" * (1 << 20)
    left = zero_bytes
    while left > 0:
        out.append(stream.compress(block[:min(left, len(block))]))
        left -= len(block)
    out.append(stream.flush())
    return b"".join(out)


def claims_cube(side: int, dtype=np.int16, fill_bytes: int | None = None) -> bytes:
    """A .nii.gz whose header claims side³ voxels; the stream holds ``fill_bytes`` zeros (default all of them)."""
    need = side ** 3 * np.dtype(dtype).itemsize
    return zeros_gz(header_bytes((side, side, side), dtype), need if fill_bytes is None else fill_bytes)


def bomb(shape=(8, 8, 8), inflated_bytes: int = 1 << 30, volume: bytes | None = None) -> bytes:
    """A small valid volume (``volume``: an uncompressed .nii's bytes) then ``inflated_bytes`` of zeros,
    in one gzip stream."""
    if volume is None:
        volume = header_bytes(shape, np.int16) + b"\x00" * (int(np.prod(shape)) * 2)
    return zeros_gz(volume, inflated_bytes)


def negative_dims() -> bytes:
    return gzip.compress(header_bytes((8, -8, 8)) + b"\x00" * 1024, mtime=0)


def zero_dims() -> bytes:
    return gzip.compress(header_bytes((8, 0, 8)) + b"\x00" * 1024, mtime=0)


def wrong_datatype(shape=(8, 8, 8)) -> bytes:
    """Header says float64 (8 bytes a voxel) but the file holds int16 voxels (2 bytes each)."""
    return gzip.compress(header_bytes(shape, np.float64) + b"\x00" * (int(np.prod(shape)) * 2), mtime=0)


def bitpix_mismatch(shape=(8, 8, 8)) -> bytes:
    return gzip.compress(header_bytes(shape, np.int16, bitpix=32) + b"\x00" * (int(np.prod(shape)) * 2), mtime=0)


def truncated_gzip(shape=(16, 16, 16)) -> bytes:
    data = gzip.compress(header_bytes(shape, np.int16) + np.arange(np.prod(shape), dtype=np.int16).tobytes(),
                         mtime=0)
    return data[: len(data) // 2]
