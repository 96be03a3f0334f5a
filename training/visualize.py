"""Draw grasp rectangles on images: jaws thick, closing axis thin."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw

from appliance.grasp import GraspRectangle

GREEN = (40, 200, 40)
RED = (230, 30, 30)


def draw_grasps(
    image: np.ndarray | Image.Image, rects: Iterable[GraspRectangle], color=GREEN, width: int = 2
) -> Image.Image:
    """A copy of the image with each rectangle drawn; the jaw edges (p1→p2, p3→p0) are thick."""
    canvas = (image if isinstance(image, Image.Image) else Image.fromarray(image)).convert("RGB").copy()
    draw = ImageDraw.Draw(canvas)
    for rect in rects:
        p = [tuple(map(float, q)) for q in rect.points]
        draw.line([p[0], p[1]], fill=color, width=1)
        draw.line([p[2], p[3]], fill=color, width=1)
        draw.line([p[1], p[2]], fill=color, width=width + 1)
        draw.line([p[3], p[0]], fill=color, width=width + 1)
    return canvas
