"""Camera image → the vision tower's input, with numpy and PIL only (no torch, no transformers).

Two steps, each the same arithmetic as training:

1. ``workspace_view``: the square workspace crop about the image centre,
   resampled to the model's input size (the dataset builder's and
   evaluation's ``center_crop``: an affine warp, bilinear).
2. ``pixel_values``: the CLIP image processor's steps — shortest edge to
   ``resize`` (bicubic), centre crop to ``size``, rescale, normalise, CHW.

``CropBox`` maps a pose in the model's view back to camera pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from appliance.bundle import ImageSpec

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class CropBox:
    """The square of the camera image the model saw: left/top corner and side, in camera pixels."""

    left: float
    top: float
    side: float

    def to_camera(self, x: float, y: float) -> tuple[float, float]:
        """A normalised position in the model's view → camera pixels."""
        return self.left + x * self.side, self.top + y * self.side


def as_rgb(image) -> np.ndarray:
    """An RGB uint8 array (H, W, 3) from a PIL image or an array; ``ValueError`` on anything else."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {array.dtype} {array.shape}")
    if min(array.shape[:2]) < 1:
        raise ValueError("empty image")
    return array


def workspace_view(image, spec: ImageSpec) -> tuple[np.ndarray, CropBox]:
    """The centred square workspace crop (``spec.crop`` pixels, or the shorter side), at ``spec.size``."""
    rgb = as_rgb(image)
    h, w = rgb.shape[:2]
    side = float(spec.crop or min(w, h))
    box = CropBox(w / 2 - side / 2, h / 2 - side / 2, side)
    scale = spec.size / side
    # PIL's affine takes the output → input map: input = (x / scale + left, y / scale + top).
    inverse = (1 / scale, 0.0, box.left, 0.0, 1 / scale, box.top)
    view = Image.fromarray(rgb).transform(
        (spec.size, spec.size), Image.Transform.AFFINE, inverse, resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )
    return np.asarray(view), box


def pixel_values(image, spec: ImageSpec) -> np.ndarray:
    """The processor's tensor for one image: float32 (1, 3, size, size)."""
    pil = Image.fromarray(as_rgb(image))
    w, h = pil.size
    short = min(w, h)
    new = (
        (spec.resize, max(1, int(spec.resize * h / w)))
        if w == short
        else (max(1, int(spec.resize * w / h)), spec.resize)
    )
    if new != pil.size:
        pil = pil.resize(new, _RESAMPLE[spec.resample])
    w, h = pil.size
    left, top = (w - spec.size) // 2, (h - spec.size) // 2
    array = np.asarray(pil.crop((left, top, left + spec.size, top + spec.size)), dtype=np.float32)
    array = array * np.float32(spec.rescale)
    array = (array - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def prepare(image, spec: ImageSpec) -> tuple[np.ndarray, np.ndarray, CropBox]:
    """Workspace view, its pixel tensor and the crop box, in one call."""
    view, box = workspace_view(image, spec)
    return view, pixel_values(view, spec), box
