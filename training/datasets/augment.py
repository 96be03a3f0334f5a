"""Geometric augmentation applied to image, depth and grasp rectangles together.

Every transform is a 3×3 affine matrix in pixel coordinates (x right, y down);
the image is resampled through its inverse and the rectangle corners are
mapped through it, so pixels and labels can never disagree. Rotations are
counter-clockwise as displayed, like grasp angles: rotating the view by ``a``
adds ``a`` to every grasp angle.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from appliance.grasp import GraspRectangle, ImageSize

from .sample import GraspSample

MAX_TRIES = 20


def translation(tx: float, ty: float) -> np.ndarray:
    """Shift by (tx, ty) pixels."""
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def rotation(angle: float, center: tuple[float, float]) -> np.ndarray:
    """Rotate by ``angle`` radians counter-clockwise as displayed, about ``center``."""
    c, s = math.cos(angle), math.sin(angle)
    rotate = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
    return translation(*center) @ rotate @ translation(-center[0], -center[1])


def scaling(sx: float, sy: float) -> np.ndarray:
    """Scale about the origin (the top-left corner)."""
    return np.diag([sx, sy, 1.0])


def crop_to(center: tuple[float, float], side: float, out_size: ImageSize) -> np.ndarray:
    """Map the square of ``side`` pixels around ``center`` onto an ``out_size`` image."""
    left, top = center[0] - side / 2, center[1] - side / 2
    return scaling(out_size[0] / side, out_size[1] / side) @ translation(-left, -top)


def warp(sample: GraspSample, matrix: np.ndarray, out_size: ImageSize, fill: int = 0) -> GraspSample:
    """Resample image and depth through ``matrix`` and map the rectangles with it.

    Rectangles whose centre leaves the output image are dropped.
    """
    inverse = np.linalg.inv(matrix)[:2].ravel()
    image = Image.fromarray(sample.image).transform(
        out_size, Image.Transform.AFFINE, inverse, resample=Image.Resampling.BILINEAR, fillcolor=(fill,) * 3
    )
    depth = None
    if sample.depth is not None:
        # Nearest neighbour: blending depth across an object edge invents surfaces.
        depth = np.asarray(
            Image.fromarray(sample.depth.astype(np.float32)).transform(
                out_size, Image.Transform.AFFINE, inverse, resample=Image.Resampling.NEAREST, fillcolor=float("nan")
            )
        )
    mask = None
    if sample.mask is not None:  # nearest neighbour: segment numbers are labels, not intensities
        mask = np.asarray(
            Image.fromarray(sample.mask).transform(
                out_size, Image.Transform.AFFINE, inverse, resample=Image.Resampling.NEAREST, fillcolor=0
            )
        )
    positives = [r.transformed(matrix) for r in sample.positives]
    keep = [i for i, r in enumerate(positives) if _in_view(r, out_size)]
    parts = tuple(sample.labels.parts[i] for i in keep) if sample.labels.parts else ()
    owners = tuple(sample.labels.owners[i] for i in keep) if sample.labels.owners else ()
    negatives = (r.transformed(matrix) for r in sample.negatives)
    return sample.with_pixels(
        np.asarray(image),
        depth,
        tuple(positives[i] for i in keep),
        tuple(r for r in negatives if _in_view(r, out_size)),
        parts,
        owners,
        mask,
    )


def _in_view(rect: GraspRectangle, size: ImageSize) -> bool:
    x, y = rect.center
    return 0 <= x < size[0] and 0 <= y < size[1]


def resize(sample: GraspSample, out_size: ImageSize) -> GraspSample:
    """Resize to the model's input size (non-uniform if the aspect ratio differs)."""
    w, h = sample.image_size
    return warp(sample, scaling(out_size[0] / w, out_size[1] / h), out_size)


def center_crop(sample: GraspSample, side: int | None, out_size: ImageSize) -> GraspSample:
    """Square crop about the image centre (``None``: the largest square), resized to ``out_size``."""
    w, h = sample.image_size
    return warp(sample, crop_to((w / 2, h / 2), side or min(w, h), out_size), out_size)


@dataclass(frozen=True)
class Augmentation:
    """Random view: rotation, zoom and shifted square crop, then resize to ``out_size``."""

    out_size: ImageSize = (224, 224)
    crop: int | None = None
    """Side of the square crop in source pixels (None: the image's shorter side)."""
    max_rotation: float = math.pi
    """Rotations are drawn uniformly from ±max_rotation radians."""
    zoom: tuple[float, float] = (0.8, 1.25)
    """Zoom factor range (above 1 magnifies)."""
    max_shift: float = 0.1
    """Crop-centre shift as a fraction of the crop side."""

    def __post_init__(self) -> None:
        if min(self.out_size) < 1:
            raise ValueError(f"out_size must be positive, got {self.out_size}")
        if self.crop is not None and self.crop < 1:
            raise ValueError(f"crop must be positive, got {self.crop}")
        if not 0 < self.zoom[0] <= self.zoom[1]:
            raise ValueError(f"zoom range must satisfy 0 < low <= high, got {self.zoom}")
        if not 0 <= self.max_shift < 0.5:
            raise ValueError(f"max_shift must be in [0, 0.5), got {self.max_shift}")

    def matrix(self, rng: random.Random, image_size: ImageSize) -> np.ndarray:
        """Draw one random view of an image of this size."""
        w, h = image_size
        side = (self.crop or min(w, h)) / rng.uniform(*self.zoom)
        shift = self.max_shift * side
        center = (w / 2 + rng.uniform(-shift, shift), h / 2 + rng.uniform(-shift, shift))
        angle = rng.uniform(-self.max_rotation, self.max_rotation)
        return crop_to(center, side, self.out_size) @ rotation(angle, center)

    def __call__(self, sample: GraspSample, rng: random.Random) -> GraspSample:
        """An augmented copy that keeps at least one positive grasp when one can be kept."""
        for _ in range(MAX_TRIES):
            view = warp(sample, self.matrix(rng, sample.image_size), self.out_size)
            if view.positives or not sample.positives:
                return view
        return center_crop(sample, self.crop, self.out_size)
