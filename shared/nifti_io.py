"""NIfTI from and to bytes, so any storage (``shared.storage``: local, gs://) serves; read with bounded memory.

nibabel only opens local files; here the bytes come from the storage layer and
nibabel parses them in memory.  Written ``.nii.gz`` files carry no timestamp,
so the same volume gives the same bytes.

Why the reader is bounded: a NIfTI header is a claim, and a 2 MB ``.nii.gz``
can claim 1024³ voxels (2 GiB once inflated).  Reading such a file in full
before looking took a worker to 4 GB and an app server to the OOM killer
(issue 21).  :func:`read_header` therefore reads and checks the header alone
(dimensions, datatype, voxel count, the bytes it declares against the file's
size and a per-volume ceiling) before any voxel is inflated, and
:func:`parse_nifti` inflates gzip only up to the bytes the header declared:
a gzip bomb stops there.  Every refusal is a :class:`NiftiError` (a
ValueError) naming the file and the reason; the core, prediction, evaluation
and the app all read through here.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import os
import zlib

import nibabel as nib
import numpy as np

# Per-volume ceiling on the memory a volume takes once read (the larger of its stored
# bytes and its float32 array).  512 MiB admits 512x512x512 float32: every BraTS grid
# (SRI24 240x240x155 = 34 MB, MNI152 182x218x182 = 29 MB) and MEN-RT's native grids
# (T1c at up to 512x512 in-plane with a few hundred slices) with room to spare, and
# refuses 768³ int16 (1.8 GB as float32) or 1024³ before any voxel is inflated.
DEFAULT_MAX_VOLUME_MB = 512
MAX_VOLUME_ENV = "BRATS_MAX_VOLUME_MB"  # overrides the default in every entry point and worker
MB = 1 << 20
# Deflate cannot expand more than about 1032:1, so a gzip file of n bytes never holds more.
DEFLATE_MAX_RATIO = 1032
MAX_HEADER_EXTENSIONS = 16 * MB  # vox_offset beyond this is not a real extension block
_GZIP_MAGIC = b"\x1f\x8b"


class NiftiError(ValueError):
    """A file that is not a usable NIfTI volume; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class HeaderInfo:
    """What a checked header declares: shape, dtype, where the voxels start and how many bytes they take."""

    header: object  # nibabel Nifti1Header or Nifti2Header
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int
    data_bytes: int  # stored voxel bytes
    memory_bytes: int  # what reading it takes: max(stored bytes, float32 array)
    gzipped: bool

    @property
    def end(self) -> int:
        """Bytes of the uncompressed file the image needs: header, extensions and voxels."""
        return self.offset + self.data_bytes


def max_volume_bytes(limit_mb: float | None = None) -> int:
    """The ceiling in bytes: ``limit_mb``, else ``$BRATS_MAX_VOLUME_MB``, else the default."""
    if limit_mb is None:
        limit_mb = float(os.environ.get(MAX_VOLUME_ENV) or DEFAULT_MAX_VOLUME_MB)
    return int(limit_mb * MB)


def inflate(data: bytes, limit: int, name: str) -> bytes:
    """At most ``limit`` bytes of a (possibly multi-member) gzip stream; fewer if it ends first.

    Output is never allowed past ``limit``: a bomb's expansion stops there.
    """
    out = bytearray()
    rest = data
    try:
        while rest[:2] == _GZIP_MAGIC and len(out) < limit:
            stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = rest
            while chunk and len(out) < limit:
                out += stream.decompress(chunk, min(limit - len(out), 16 * MB))
                chunk = stream.unconsumed_tail
            if not stream.eof:
                break
            rest = stream.unused_data
    except zlib.error as exc:
        raise NiftiError(f"{name} is not a readable gzip file (truncated or corrupt: {exc})") from None
    return bytes(out)


def check_complete(data: bytes, name: str, limit_mb: float | None = None) -> HeaderInfo:
    """:func:`read_header`, then the whole file inflated chunk by chunk and dropped, to check it holds the
    voxels its header declares (a truncated copy, a datatype wider than the data) at constant memory."""
    info = read_header(data, name, limit_mb)
    held = len(data)
    if info.gzipped:
        held, rest, stream = 0, data, zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while rest and held < info.end:
                held += len(stream.decompress(rest, min(info.end - held, 4 * MB)))
                rest = stream.unconsumed_tail
        except zlib.error as exc:
            raise NiftiError(f"{name} is not a readable gzip file (truncated or corrupt: {exc})") from None
    if held < info.end:
        raise NiftiError(f"{name}: truncated: header declares {info.end} bytes ({'x'.join(map(str, info.shape))} "
                         f"{info.dtype}), the file holds {held} (a datatype that does not match the data, or an "
                         "interrupted copy)")
    return info


def _header_class(head: bytes, name: str):
    """NIfTI-1 or NIfTI-2 by the first field (sizeof_hdr, 348 or 540, either byte order)."""
    for header_class in (nib.Nifti1Header, nib.Nifti2Header):
        size = header_class.sizeof_hdr
        if size in (int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")):
            if len(head) < size:
                raise NiftiError(f"{name}: truncated header ({len(head)} of {size} bytes)")
            return header_class
    raise NiftiError(f"{name} is not a NIfTI file (no NIfTI-1/2 header)")


def _declared(header, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the raw dim/datatype/bitpix fields, refusing impossible ones."""
    dim = [int(d) for d in header["dim"]]
    if not 1 <= dim[0] <= 7:
        raise NiftiError(f"{name}: header declares {dim[0]} dimensions (dim[0] must be 1 to 7)")
    shape = tuple(dim[1:dim[0] + 1])
    if any(n <= 0 for n in shape):
        raise NiftiError(f"{name}: header declares dimensions {shape}; every one must be > 0")
    code = int(header["datatype"])
    try:
        dtype = np.dtype(header.get_data_dtype())
    except Exception:  # nibabel raises KeyError/HeaderDataError for an unknown code
        raise NiftiError(f"{name}: unknown NIfTI datatype code {code}") from None
    if int(header["bitpix"]) != dtype.itemsize * 8:
        raise NiftiError(f"{name}: datatype {dtype} (code {code}) takes {dtype.itemsize * 8} bits per voxel, "
                         f"but bitpix says {int(header['bitpix'])}")
    return shape, dtype


def read_header(data: bytes, name: str, limit_mb: float | None = None) -> HeaderInfo:
    """The header checked against itself, the file's size and the ceiling; no voxel is inflated.

    NiftiError when the dimensions are not positive, the datatype is unknown
    or disagrees with bitpix, the volume is over the ceiling, or the file is
    too small for the voxels it declares (for gzip: more than deflate can hold).
    """
    gzipped = data[:2] == _GZIP_MAGIC
    head = inflate(data, 544, name) if gzipped else data[:544]
    header_class = _header_class(head, name)
    try:
        header = header_class.from_fileobj(io.BytesIO(head[:header_class.sizeof_hdr]), check=False)
    except Exception as exc:
        raise NiftiError(f"{name}: unreadable NIfTI header ({type(exc).__name__}: {exc})") from None
    shape, dtype = _declared(header, name)
    offset = int(header["vox_offset"])
    if not header_class.sizeof_hdr <= offset <= MAX_HEADER_EXTENSIONS:
        raise NiftiError(f"{name}: voxel offset {offset} is outside {header_class.sizeof_hdr}.."
                         f"{MAX_HEADER_EXTENSIONS} bytes")
    voxels = math.prod(shape)
    info = HeaderInfo(header, shape, dtype, offset, voxels * dtype.itemsize,
                      max(voxels * dtype.itemsize, voxels * 4), gzipped)
    ceiling = max_volume_bytes(limit_mb)
    if info.memory_bytes > ceiling:
        raise NiftiError(f"{name}: header declares {'x'.join(map(str, shape))} {dtype} voxels "
                         f"({info.memory_bytes / MB:.0f} MB once read), over the per-volume ceiling of "
                         f"{ceiling / MB:.0f} MB (set {MAX_VOLUME_ENV} to raise it)")
    room = len(data) * DEFLATE_MAX_RATIO if gzipped else len(data)
    if info.end > room:
        held = (f"a gzip stream of {len(data)} bytes cannot hold them" if gzipped
                else f"the file has {len(data)} bytes (truncated, or a datatype that does not match the data)")
        raise NiftiError(f"{name}: header declares {info.end} bytes ({'x'.join(map(str, shape))} {dtype}), "
                         f"but {held}")
    return info


def parse_nifti(data: bytes, name: str, limit_mb: float | None = None) -> nib.Nifti1Image:
    """Parse NIfTI bytes (gzipped or not) after :func:`read_header`; gzip is inflated only as far as the
    header's voxels reach.  NiftiError (a ValueError) with the file and the reason if it is not usable."""
    info = read_header(data, name, limit_mb)
    raw = inflate(data, info.end, name) if info.gzipped else data[:info.end]
    if len(raw) < info.end:
        raise NiftiError(f"{name}: truncated: header declares {info.end} bytes ({'x'.join(map(str, info.shape))} "
                         f"{info.dtype}), the {'gzip stream' if info.gzipped else 'file'} holds {len(raw)}"
                         + " (a datatype that does not match the data, or an interrupted copy)")
    image_class = nib.Nifti2Image if isinstance(info.header, nib.Nifti2Header) else nib.Nifti1Image
    try:
        return image_class.from_bytes(raw)
    except Exception as exc:  # nibabel raises many types for bad files
        raise NiftiError(f"cannot parse {name} as NIfTI: {type(exc).__name__}: {exc}") from exc


def check_file_size(size: int, name: str, limit_mb: float | None = None) -> None:
    """Refuse a file larger than any volume under the ceiling could be, before reading it into memory."""
    bound = max_volume_bytes(limit_mb) + MAX_HEADER_EXTENSIONS
    if size > bound:
        raise NiftiError(f"{name}: the file has {size / MB:.0f} MB, more than a volume under the per-volume "
                         f"ceiling of {max_volume_bytes(limit_mb) / MB:.0f} MB can take (set {MAX_VOLUME_ENV} "
                         "to raise it)")


def read_file(path: str, limit_mb: float | None = None) -> tuple[nib.Nifti1Image, bytes]:
    """(image, the file's bytes) of a NIfTI file on any storage, its size checked before it is read."""
    from shared import storage

    name = os.path.basename(path.rstrip("/"))
    check_file_size(storage.size(path), name, limit_mb)
    data = storage.read_bytes(path)
    return parse_nifti(data, name, limit_mb), data


def load_array(image: nib.Nifti1Image, name: str, dtype=np.float32) -> np.ndarray:
    """The voxel array (scaled by the header's slope/intercept) as ``dtype``."""
    try:
        return np.asarray(image.dataobj, dtype=dtype)
    except Exception as exc:
        raise NiftiError(f"cannot read voxels of {name}: {type(exc).__name__}: {exc}") from exc


def nifti_bytes(array: np.ndarray, affine: np.ndarray, header=None, compress: bool = True,
                level: int = 6) -> bytes:
    """Serialise a volume as NIfTI-1 bytes, gzipped without a timestamp.

    qform and sform codes are set to 1 (scanner) so readers get the affine back.
    """
    image = nib.Nifti1Image(array, affine, header=header)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    data = image.to_bytes()
    return gzip.compress(data, compresslevel=level, mtime=0) if compress else data
