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


#: brain: ``size`` around the brain's bounding box (the default); fixed: a box on the source grid (the
#: seeds' recipe); centered: the same box as brain, under the name datasets made before it had.
CROP_MODES = ("brain", "fixed", "centered")


@dataclasses.dataclass(frozen=True)
class PreprocessingSpec:
    """The shape-deciding part of a preprocessing config."""

    layout: str
    modalities: tuple[str, ...]
    crop_mode: str  # "fixed": ``crop_box`` on the source grid; "brain"/"centered": ``crop_size`` around the brain
    crop_box: tuple[tuple[int, int], ...] | None
    crop_size_centered: tuple[int, int, int] | None
    compression: str

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
            crop_size_centered=tuple(int(s) for s in crop["size"]) if crop["mode"] != "fixed" else None,
            compression=check_compression(cfg.get("shards", {}).get("compression", DEFAULT_COMPRESSION)),
        )

    @property
    def crop_shape(self) -> tuple[int, int, int]:
        """Spatial shape of every record's image and mask (and of the ``volume`` window)."""
        if self.crop_mode == "fixed":
            return tuple(b - a for a, b in self.crop_box)
        return self.crop_size_centered

    @property
    def min_source_shape(self) -> tuple[int, int, int]:
        """The smallest source grid a patient needs: the box's far corner (fixed) or the crop (centred)."""
        if self.crop_mode == "fixed":
            return tuple(b for _, b in self.crop_box)
        return self.crop_size_centered

    def describe_crop(self) -> str:
        """``box 48:192 x 48:192 x 5:149``, ``brain 160x192x160`` or ``centred 128x128x128``, for people."""
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
        return math.prod(self.crop_shape) * (2 * self.channels + self.num_classes) + 4096
