"""Draw grasp rectangles on images: jaws thick, closing axis thin."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw

from appliance.grasp import GraspRectangle
from appliance.runtime.annotate import draw_rectangle

GREEN = (40, 200, 40)
RED = (230, 30, 30)


def draw_grasps(
    image: np.ndarray | Image.Image, rects: Iterable[GraspRectangle], color=GREEN, width: int = 2
) -> Image.Image:
    """A copy of the image with each rectangle drawn; the jaw edges (p1→p2, p3→p0) are thick."""
    canvas = (image if isinstance(image, Image.Image) else Image.fromarray(image)).convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    for rect in rects:
        draw_rectangle(draw, rect, jaws=(color, width + 1), axis=(color, 1))
    return canvas
