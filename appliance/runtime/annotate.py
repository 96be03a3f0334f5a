"""The annotated image a prediction comes back with: the grasp drawn over what the model saw."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from appliance.grasp import GraspPose, GraspRectangle

JAW_COLOUR, BODY_COLOUR, OBJECT_COLOUR = (255, 40, 40), (255, 200, 0), (40, 200, 255)


def draw_rectangle(
    draw: ImageDraw.ImageDraw, rect: GraspRectangle, jaws=(JAW_COLOUR, 3), axis=(BODY_COLOUR, 1)
) -> None:
    """One grasp rectangle: the closing axis (p0→p1, p2→p3) thin, the jaws (p1→p2, p3→p0) thick on top.
    ``jaws`` and ``axis`` are (colour, line width)."""
    p = [tuple(map(float, q)) for q in rect.points]
    draw.line([p[0], p[1]], fill=axis[0], width=axis[1])
    draw.line([p[2], p[3]], fill=axis[0], width=axis[1])
    draw.line([p[1], p[2]], fill=jaws[0], width=jaws[1])
    draw.line([p[3], p[0]], fill=jaws[0], width=jaws[1])


def annotate(
    view: np.ndarray, pose: GraspPose | None, box=None, opening: float = 0.2, jaw: float = 0.06
) -> Image.Image:
    """The view with the grasp rectangle (``opening``/``jaw`` are fractions of the image width) and the resolved
    object's box ``(u0, v0, u1, v1)`` in the view's pixels, when there is one."""
    image = Image.fromarray(view).convert("RGB")
    if pose is None:
        return image
    w, h = image.size
    draw = ImageDraw.Draw(image)
    if box is not None:
        u0, v0, u1, v1 = box
        draw.rectangle([u0, v0, max(u0, u1 - 1), max(v0, v1 - 1)], outline=OBJECT_COLOUR, width=1)
    draw_rectangle(draw, pose.to_rectangle((w, h), opening * w, jaw * w))
    cx, cy = pose.x * w, pose.y * h
    draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], outline=JAW_COLOUR, width=2)
    return image


def png_bytes(image: Image.Image) -> bytes:
    """The image as PNG bytes (the reply's second frame)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
