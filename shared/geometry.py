"""Scan geometry: orientation, voxel spacing and grid, against what a model was trained on.

A network learns the layout of its training scans: BraTS stores every scan
skull-stripped, co-registered to one atlas grid (SRI24: 240x240x155 at 1 mm)
and with the same axis order and flips (``LPS`` in nibabel's axis codes: the
first array axis runs to the patient's left, the second to posterior, the
third to superior).  The same anatomy stored in another orientation, at
another voxel size or on another grid is a different array, and cropping it
"as if it were BraTS" segments the wrong voxels without a word.

So the preprocessing records the geometry of its training scans in the
dataset's manifest (:func:`summarize`, under ``geometry``), and prediction,
evaluation and the web app compare every scan with it (:class:`Expected`):

* another **orientation** is exact to undo (flips and axis swaps of the
  array): the scan is reoriented on the way in and the segmentation written
  back in the scan's own orientation (:class:`Reorientation`; prediction
  undoes it, with the resampling and the crop, only through the core's
  record of the patient's grid, :class:`preprocessing.grid.GridRecord`);
* another **spacing or grid** is resampled where the dataset's preprocessing
  resamples anyway (``resample.enabled``, native-space cohorts), and refused
  otherwise (:class:`GeometryError`, naming what the scan has and what the
  model expects): guessing a registration is not this project's job.

A manifest written before geometry was recorded has none: its models'
scans are not checked (:attr:`Expected.recorded` is False), as before.
Whether scans are co-registered to the same atlas (the grid's origin) cannot
be told from a header, and is not checked.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

from shared.volume_ops import voxel_spacing

SPACING_TOLERANCE = 1e-3  # relative: 1 mm and 1.0005 mm are the same voxel size
KEY = "geometry"  # the manifest's (and lineage.json's) entry


class GeometryError(ValueError):
    """A scan whose spacing or grid the model cannot take; the message says what it has and what is expected.

    A ``ValueError``, so every caller that reports bad input (dead letters,
    ``errors.jsonl``, the app's messages) reports it with the patient and file.
    """


def axcodes(affine) -> str:
    """nibabel's axis codes of an affine as one string: ``"LPS"`` for BraTS, ``"RAS"`` for the NIfTI default."""
    import nibabel as nib

    return "".join(nib.aff2axcodes(np.asarray(affine, dtype=np.float64)))


def _mm(values) -> str:
    return "x".join(f"{float(v):g}" for v in values)


@dataclasses.dataclass(frozen=True)
class ScanGeometry:
    """One scan's orientation, array shape and voxel spacing."""

    orientation: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]

    @classmethod
    def of(cls, affine, shape) -> "ScanGeometry":
        return cls(axcodes(affine), tuple(int(s) for s in shape[:3]), voxel_spacing(affine))

    def describe(self) -> str:
        """``48x48x40 voxels of 1x1x1 mm, orientation LPS``, for messages."""
        return f"{'x'.join(map(str, self.shape))} voxels of {_mm(self.spacing)} mm, orientation {self.orientation}"

    def to_json(self) -> dict:
        return {"orientation": self.orientation, "shape": list(self.shape),
                "spacing_mm": [round(s, 6) for s in self.spacing]}

    def same_spacing(self, spacing) -> bool:
        return np.allclose(self.spacing, spacing, rtol=SPACING_TOLERANCE, atol=0)

    def same_grid(self, shape, spacing) -> bool:
        return self.shape == tuple(int(s) for s in shape) and self.same_spacing(spacing)


def summarize(scans: Iterable[ScanGeometry | dict], resamples: bool) -> dict:
    """The manifest's ``geometry``: the training scans' orientations and, unless preprocessing resamples, grids.

    Native-space datasets (``resamples``) take any grid, so theirs are not
    listed (there may be one per patient); orientations always are.
    """
    scans = [s if isinstance(s, ScanGeometry) else ScanGeometry(s["orientation"], tuple(s["shape"]),
                                                                tuple(s["spacing_mm"])) for s in scans]
    entry = {"orientations": sorted({s.orientation for s in scans})}
    if not resamples:
        grids = {(s.shape, tuple(round(v, 6) for v in s.spacing)) for s in scans}
        entry["grids"] = [{"shape": list(shape), "spacing_mm": list(spacing)} for shape, spacing in sorted(grids)]
    return entry


def resample_spacing(cfg: dict) -> tuple[float, float, float] | None:
    """The mm a preprocessing config resamples every scan to (its ``resample`` block), None where it does not."""
    block = cfg.get("resample") or {}
    if not block.get("enabled", False):
        return None
    return tuple(float(s) for s in block.get("spacing", (1.0, 1.0, 1.0)))


@dataclasses.dataclass(frozen=True)
class Expected:
    """What a model's scans must look like: its dataset's recorded geometry and its preprocessing's resampling."""

    orientations: tuple[str, ...] = ()  # empty: not recorded, not checked
    grids: tuple[tuple[tuple[int, int, int], tuple[float, float, float]], ...] = ()  # empty: any grid
    resample_mm: tuple[float, float, float] | None = None  # the preprocessing resamples to this spacing
    recorded: bool = False  # the dataset recorded its geometry (manifests before it did not)

    @classmethod
    def from_entry(cls, entry: dict | None, cfg: dict) -> "Expected":
        """From a manifest's (or lineage.json's) ``geometry`` entry and the preprocessing config."""
        if not entry:
            return cls(resample_mm=resample_spacing(cfg))
        grids = tuple((tuple(int(n) for n in g["shape"]), tuple(float(s) for s in g["spacing_mm"]))
                      for g in entry.get("grids") or ())
        return cls(tuple(entry.get("orientations") or ()), grids, resample_spacing(cfg), True)

    @property
    def orientation(self) -> str | None:
        """The orientation a scan is turned into when it has none of the training ones."""
        return self.orientations[0] if self.orientations else None

    def describe(self) -> str:
        """What the model expects, for people: ``orientation LPS, 240x240x155 voxels of 1x1x1 mm``."""
        if not self.recorded:
            return "not recorded (a dataset preprocessed before geometry was recorded: scans are not checked)"
        parts = [f"orientation {' or '.join(self.orientations)}"]
        if self.resample_mm is not None:
            parts.append(f"any grid, resampled to {_mm(self.resample_mm)} mm")
        elif self.grids:
            parts.append(" or ".join(f"{'x'.join(map(str, shape))} voxels of {_mm(spacing)} mm"
                                     for shape, spacing in self.grids))
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class Reorientation:
    """A scan's turn from its stored orientation into the training one, exact both ways (flips and axis swaps)."""

    source: str  # axis codes as stored: "RAS"
    target: str  # axis codes the model was trained on: "LPS"
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray

    def _transform(self, start: str, end: str) -> np.ndarray:
        from nibabel import orientations as ornt

        return ornt.ornt_transform(ornt.axcodes2ornt(tuple(start)), ornt.axcodes2ornt(tuple(end)))

    def forward(self, array: np.ndarray) -> np.ndarray:
        """A source-orientation array (3-D, or with trailing axes such as channels) in the training orientation."""
        from nibabel import orientations as ornt

        return np.ascontiguousarray(ornt.apply_orientation(array, self._transform(self.source, self.target)))

    def backward(self, array: np.ndarray) -> np.ndarray:
        """A training-orientation array (segmentation, probabilities) back in the scan's own orientation."""
        from nibabel import orientations as ornt

        return np.ascontiguousarray(ornt.apply_orientation(array, self._transform(self.target, self.source)))

    @property
    def affine(self) -> np.ndarray:
        """The affine of the reoriented array: the same voxels at the same world positions."""
        from nibabel import orientations as ornt

        step = ornt.inv_ornt_aff(self._transform(self.source, self.target), self.source_shape)
        return np.asarray(self.source_affine, dtype=np.float64) @ step

    def note(self) -> str:
        return (f"stored in orientation {self.source}: reoriented to the model's {self.target}, "
                f"and the segmentation written back in {self.source}")


def reorientation(affine, shape, target: str | None) -> Reorientation | None:
    """How to turn a scan into ``target`` orientation; None when it is already there (or no target)."""
    found = axcodes(affine)
    if target is None or found == target:
        return None
    return Reorientation(found, target, tuple(int(s) for s in shape[:3]), np.asarray(affine, dtype=np.float64))


def check(scan: ScanGeometry, expected: Expected) -> str | None:
    """Refuse a scan (already in the training orientation) on a grid the model cannot take.

    Returns a note when the preprocessing will resample a scan of another
    spacing, None when the scan is on a training grid; raises
    :class:`GeometryError` otherwise.
    """
    if expected.resample_mm is not None:
        if scan.same_spacing(expected.resample_mm):
            return None
        return f"voxels of {_mm(scan.spacing)} mm: resampled to the model's {_mm(expected.resample_mm)} mm"
    if not expected.grids or any(scan.same_grid(shape, spacing) for shape, spacing in expected.grids):
        return None
    wanted = " or ".join(f"{'x'.join(map(str, shape))} voxels of {_mm(spacing)} mm" for shape, spacing in expected.grids)
    raise GeometryError(f"the scan is {scan.describe()} (after reorienting), but the model was trained on {wanted}, "
                        "and its preprocessing does not resample: bring the scan onto that grid first, or use a model "
                        "trained on this grid or one whose preprocessing resamples (resample.enabled)")


def align_to(array: np.ndarray, affine, reference_affine, reference_shape: Sequence[int],
             what: str = "the prediction", reference: str = "the ground truth") -> np.ndarray:
    """``array`` (stored with ``affine``) in the orientation of a reference image, on its grid or refused.

    For scoring a segmentation against a truth stored in another orientation:
    the flips and swaps are undone exactly; a different shape or spacing
    after that raises :class:`GeometryError` naming both geometries.
    """
    stored = ScanGeometry.of(affine, array.shape)
    turn = reorientation(affine, array.shape, axcodes(reference_affine))
    if turn is not None:
        array, affine = turn.forward(array), turn.affine
    want = ScanGeometry.of(reference_affine, reference_shape)
    if not ScanGeometry.of(affine, array.shape).same_grid(want.shape, want.spacing):
        raise GeometryError(f"{what} is {stored.describe()}: it differs from {reference}'s grid "
                            f"({want.describe()}) even after reorienting")
    return array
