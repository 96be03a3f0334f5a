"""The annotated image a prediction comes back with: the grasp drawn over what the model saw."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from .grasp import GraspPose

JAW_COLOUR, BODY_COLOUR = (255, 40, 40), (255, 200, 0)


def annotate(view: np.ndarray, pose: GraspPose | None, opening: float = 0.2, jaw: float = 0.06) -> Image.Image:
    """The view with the grasp rectangle: ``opening``/``jaw`` are fractions of the image width."""
    image = Image.fromarray(view).convert("RGB")
    if pose is None:
        return image
    w, h = image.size
    corners = pose.to_rectangle((w, h), opening * w, jaw * w).points
    draw = ImageDraw.Draw(image)
    pts = [tuple(map(float, p)) for p in corners]
    draw.line([pts[1], pts[2]], fill=JAW_COLOUR, width=3)  # the jaws
    draw.line([pts[3], pts[0]], fill=JAW_COLOUR, width=3)
    draw.line([pts[0], pts[1]], fill=BODY_COLOUR, width=1)  # the closing axis
    draw.line([pts[2], pts[3]], fill=BODY_COLOUR, width=1)
    cx, cy = pose.x * w, pose.y * h
    draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], outline=JAW_COLOUR, width=2)
    return image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
