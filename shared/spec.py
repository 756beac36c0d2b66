"""What a dataset's preprocessing expects and produces, read from its config.

The preprocessing config (``configs/preprocess``) is stored in every dataset's
manifest and in a run's ``lineage.json``.  Training, prediction, the launcher
and the web app each need the same few facts from it (the channels, the crop
and so the shape of a record, the classes); :class:`PreprocessingSpec` derives
them in one place instead of each reader computing them again.
"""

from __future__ import annotations

import dataclasses
import math

from shared import challenges
from shared.manifest import DEFAULT_COMPRESSION, check_compression


#: bbox: the brain's bounding box with a margin, rounded up to a multiple (the default; one shape per
#: patient); brain: ``size`` around the brain's bounding box; fixed: a box on the source grid (the seeds'
#: recipe); centered: the same box as brain, under the name datasets made before it had.
CROP_MODES = ("bbox", "brain", "fixed", "centered")

#: ``bbox`` fields a hand-written config may leave out: the registry's default crop (configs/preprocess/default.py
#: says why these values).
BBOX_DEFAULTS = {k: v for k, v in challenges.BBOX_CROP.items() if k != "mode"}
#: Bound of a native-space (resampled to 1 mm) scan's extent per axis, for the record-size estimate: a
#: head fits in 256 mm.
NATIVE_EXTENT = (256, 256, 256)


def bbox_params(crop) -> tuple[int, int, tuple[int, int, int]]:
    """``(margin, multiple, min_size)`` of a ``bbox`` crop config; ValueError for values that make no box."""
    margin = int(crop.get("margin", BBOX_DEFAULTS["margin"]))
    multiple = int(crop.get("multiple", BBOX_DEFAULTS["multiple"]))
    min_size = tuple(int(n) for n in crop.get("min_size", BBOX_DEFAULTS["min_size"]))
    if margin < 0 or multiple < 1 or len(min_size) != 3 or min(min_size) < 1:
        raise ValueError(f"crop mode bbox needs margin >= 0, multiple >= 1 and three positive min_size, got "
                         f"margin {margin}, multiple {multiple}, min_size {min_size}")
    return margin, multiple, min_size  # type: ignore[return-value]


def _round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


@dataclasses.dataclass(frozen=True)
class PreprocessingSpec:
    """The shape-deciding part of a preprocessing config."""

    layout: str
    modalities: tuple[str, ...]
    crop_mode: str  # "bbox": the brain's box + margin; "fixed": ``crop_box``; "brain"/"centered": ``crop_size``
    crop_box: tuple[tuple[int, int], ...] | None
    crop_size_centered: tuple[int, int, int] | None
    compression: str
    bbox: tuple[int, int, tuple[int, int, int]] | None = None  # (margin, multiple, min_size) of mode bbox

    @classmethod
    def from_config(cls, cfg: dict) -> "PreprocessingSpec":
        crop = cfg["crop"]
        if crop["mode"] not in CROP_MODES:
            raise ValueError(f"unknown crop mode {crop['mode']!r}; use one of {', '.join(CROP_MODES)}")
        challenges.get(cfg["layout"])  # an unknown challenge fails here
        return cls(
            layout=cfg["layout"],
            modalities=tuple(cfg["modalities"]),
            crop_mode=crop["mode"],
            crop_box=tuple((int(a), int(b)) for a, b in crop["box"]) if crop["mode"] == "fixed" else None,
            crop_size_centered=(tuple(int(s) for s in crop["size"]) if crop["mode"] in ("brain", "centered")
                                else None),
            compression=check_compression(cfg.get("shards", {}).get("compression", DEFAULT_COMPRESSION)),
            bbox=bbox_params(crop) if crop["mode"] == "bbox" else None,
        )

    @property
    def crop_shape(self) -> tuple[int, int, int] | None:
        """Spatial shape of every record's image and mask (and of the ``volume`` window).

        None for ``bbox``: each record has its own shape (a multiple of :attr:`shape_multiple`), so
        readers take the shape from the record (the trainer parses with unknown dims and pads a record
        smaller than its patch; the ``volume`` window is each record's whole shape).
        """
        if self.crop_mode == "bbox":
            return None
        if self.crop_mode == "fixed":
            return tuple(b - a for a, b in self.crop_box)
        return self.crop_size_centered

    @property
    def shape_multiple(self) -> int | None:
        """What every record's dims are a multiple of, where records differ in shape (``bbox``); else None."""
        return self.bbox[1] if self.bbox else None

    @property
    def min_source_shape(self) -> tuple[int, int, int]:
        """The smallest source grid a patient needs: the box's far corner (fixed), the crop (centred), or
        one voxel (bbox: the box pads wherever the scan is smaller)."""
        if self.crop_mode == "bbox":
            return (1, 1, 1)
        if self.crop_mode == "fixed":
            return tuple(b for _, b in self.crop_box)
        return self.crop_size_centered

    def max_record_shape(self) -> tuple[int, int, int]:
        """The largest record shape: the crop's, or for ``bbox`` the challenge's whole grid (a bound of any
        brain on it; :data:`NATIVE_EXTENT` for native-space challenges) with the margin, rounded up."""
        if self.crop_shape is not None:
            return self.crop_shape
        margin, multiple, min_size = self.bbox
        grid = self.challenge.grid.shape or NATIVE_EXTENT
        return tuple(_round_up(max(n + 2 * margin, least), multiple) for n, least in zip(grid, min_size))

    def describe_crop(self) -> str:
        """``box 48:192 x 48:192 x 5:149``, ``brain 160x192x160``, ``centred 128x128x128`` or
        ``brain bounding box + 8, multiple of 16``, for people."""
        if self.crop_mode == "bbox":
            margin, multiple, min_size = self.bbox
            return (f"brain bounding box + {margin}, multiple of {multiple} (at least "
                    + "x".join(map(str, min_size)) + ")")
        if self.crop_mode == "fixed":
            return "box " + " x ".join(f"{a}:{b}" for a, b in self.crop_box)
        word = "brain" if self.crop_mode == "brain" else "centred"
        return f"{word} " + "x".join(map(str, self.crop_size_centered))

    @property
    def channels(self) -> int:
        return len(self.modalities)

    @property
    def challenge(self) -> challenges.Challenge:
        """The registry entry of the dataset's ``layout`` (its challenge)."""
        return challenges.get(self.layout)

    @property
    def label_convention(self) -> str:
        return self.challenge.label_convention

    @property
    def num_classes(self) -> int:
        return self.challenge.num_classes

    def record_bytes(self) -> int:
        """Upper bound of one serialised record: float16 image, uint8 one-hot, and the metadata."""
        return math.prod(self.max_record_shape()) * (2 * self.channels + self.num_classes) + 4096
