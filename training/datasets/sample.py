"""The common record every dataset reader produces and everything downstream consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from appliance.grasp import GraspRectangle, ImageSize


@dataclass(frozen=True)
class GraspLabels:
    """What a dataset knows about one image without decoding its pixels."""

    image_id: str
    image_size: ImageSize
    positives: tuple[GraspRectangle, ...]
    negatives: tuple[GraspRectangle, ...] = ()
    object_id: str | None = None
    object_name: str | None = None
    category: str | None = None
    source: Path | None = None
    skipped: int = 0
    """Rectangles dropped while reading (NaN coordinates)."""
    parts: tuple[str, ...] = ()
    """Object part of each positive rectangle, where the dataset records it (else empty)."""
    owners: tuple[int, ...] = ()
    """Scene object (index into the scene's objects) of each positive rectangle, where known (else empty)."""


@dataclass(frozen=True)
class GraspSample:
    """One image with its grasps: RGB (H×W×3 uint8), optional depth (H×W float32 metres, NaN = hole)."""

    image: np.ndarray
    labels: GraspLabels
    depth: np.ndarray | None = field(default=None)
    mask: np.ndarray | None = field(default=None)
    """Segment of every pixel (H×W uint8, 0 = table; see ``referring.SceneTruth``), where known."""

    def __post_init__(self) -> None:
        h, w = self.image.shape[:2]
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"{self.image_id}: image must be H×W×3 uint8, got {self.image.shape} {self.image.dtype}")
        if (w, h) != tuple(self.labels.image_size):
            raise ValueError(f"{self.image_id}: image is {w}×{h} but labels say {self.labels.image_size}")
        if self.depth is not None and self.depth.shape != (h, w):
            raise ValueError(f"{self.image_id}: depth shape {self.depth.shape} does not match image {h}×{w}")
        if self.mask is not None and self.mask.shape != (h, w):
            raise ValueError(f"{self.image_id}: mask shape {self.mask.shape} does not match image {h}×{w}")

    @property
    def image_id(self) -> str:
        return self.labels.image_id

    @property
    def image_size(self) -> ImageSize:
        return self.labels.image_size

    @property
    def positives(self) -> tuple[GraspRectangle, ...]:
        return self.labels.positives

    @property
    def negatives(self) -> tuple[GraspRectangle, ...]:
        return self.labels.negatives

    @property
    def object_id(self) -> str | None:
        return self.labels.object_id

    @property
    def category(self) -> str | None:
        return self.labels.category

    def with_pixels(
        self,
        image: np.ndarray,
        depth: np.ndarray | None,
        positives: tuple[GraspRectangle, ...],
        negatives: tuple[GraspRectangle, ...],
        parts: tuple[str, ...] = (),
        owners: tuple[int, ...] = (),
        mask: np.ndarray | None = None,
    ) -> GraspSample:
        """The same object and identity with new pixels and rectangles (after augmentation)."""
        h, w = image.shape[:2]
        labels = replace(
            self.labels, image_size=(w, h), positives=positives, negatives=negatives, parts=parts, owners=owners
        )
        return GraspSample(image=image, labels=labels, depth=depth, mask=mask)
