"""NIfTI from and to bytes, so any storage (``shared.storage``: local, gs://) serves.

nibabel only opens local files; here the bytes come from the storage layer and
nibabel parses them in memory.  Written ``.nii.gz`` files carry no timestamp,
so the same volume gives the same bytes.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np



def parse_nifti(data: bytes, name: str) -> nib.Nifti1Image:
    """Parse NIfTI bytes (gzipped or not); ValueError with the reason if corrupt."""
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return nib.Nifti1Image.from_bytes(data)
    except Exception as exc:  # nibabel raises many types for bad files
        raise ValueError(f"cannot parse {name} as NIfTI: {type(exc).__name__}: {exc}") from exc


def load_array(image: nib.Nifti1Image, name: str, dtype=np.float32) -> np.ndarray:
    """The voxel array (scaled by the header's slope/intercept) as ``dtype``."""
    try:
        return np.asarray(image.dataobj, dtype=dtype)
    except Exception as exc:
        raise ValueError(f"cannot read voxels of {name}: {type(exc).__name__}: {exc}") from exc


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
