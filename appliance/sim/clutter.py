"""Cluttered scenes: object footprints on the table, non-overlapping arrangements, colour and size words.

A footprint is the union of oriented rectangles, one per geom, seen from above
(a round geom counts as its bounding square: conservative). Two objects overlap
when any of their rectangles, each grown by half the gap, intersect (separating
axes). Shared by the synthetic dataset and the sim cell.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from .objects import Geom, ObjectModel

MIN_GAP = 0.005
"""Metres kept free between two objects' footprints."""
NEAR_SHARE = 0.5
"""Share of objects placed right beside one already on the table (within CLOSE_GAP)."""
CLOSE_GAP = 0.02
PLACE_TRIES = 200


@dataclass(frozen=True)
class Box2:
    """An oriented rectangle on the table: centre, angle (radians, counter-clockwise from x) and half sizes."""

    cx: float
    cy: float
    angle: float
    hx: float
    hy: float

    def corners(self, grow: float = 0.0) -> np.ndarray:
        c, s = math.cos(self.angle), math.sin(self.angle)
        ax, ay = np.array([c, s]) * (self.hx + grow), np.array([-s, c]) * (self.hy + grow)
        centre = np.array([self.cx, self.cy])
        return np.stack([centre - ax - ay, centre + ax - ay, centre + ax + ay, centre - ax + ay])

    def moved(self, x: float, y: float, yaw: float) -> Box2:
        """This rectangle (object frame) on an object standing at (x, y) turned by yaw."""
        c, s = math.cos(yaw), math.sin(yaw)
        return Box2(x + c * self.cx - s * self.cy, y + s * self.cx + c * self.cy, self.angle + yaw, self.hx, self.hy)


def geom_box(g: Geom) -> Box2:
    """The top-down footprint of one geom in the object frame."""
    s = g.size
    if g.type in ("box", "ellipsoid"):
        return Box2(g.pos[0], g.pos[1], g.yaw, s[0], s[1])
    if g.type == "sphere":
        return Box2(g.pos[0], g.pos[1], 0.0, s[0], s[0])
    axis = np.array(g.zaxis, dtype=float) / np.linalg.norm(g.zaxis)
    flat = math.hypot(axis[0], axis[1])
    cap = s[0] if g.type == "capsule" else 0.0
    if flat < 1e-6:  # standing upright: a disc
        return Box2(g.pos[0], g.pos[1], 0.0, s[0], s[0])
    half_len = flat * s[1] + cap + abs(axis[2]) * s[0]
    return Box2(g.pos[0], g.pos[1], math.atan2(axis[1], axis[0]), half_len, s[0])


def footprint(obj: ObjectModel, x: float, y: float, yaw: float) -> list[Box2]:
    """The object's footprint on the table when it stands at (x, y) turned by yaw."""
    return [geom_box(g).moved(x, y, yaw) for g in obj.geoms]


def _corners(boxes: list[Box2], grow: float) -> np.ndarray:
    """``Box2.corners`` of every box at once, (n, 4, 2): the same numbers, without a few small arrays per box
    (placing a scene's objects called it tens of thousands of times)."""
    turn = np.array([(math.cos(b.angle), math.sin(b.angle)) for b in boxes])
    ax = turn * np.array([b.hx + grow for b in boxes])[:, None]
    ay = np.stack([-turn[:, 1], turn[:, 0]], axis=1) * np.array([b.hy + grow for b in boxes])[:, None]
    centre = np.array([(b.cx, b.cy) for b in boxes])
    return np.stack([centre - ax - ay, centre + ax - ay, centre + ax + ay, centre - ax + ay], axis=1)


def _normals(corners: np.ndarray) -> np.ndarray:
    """The two edge normals of each rectangle: (n, 2, 2)."""
    edges = np.stack([corners[:, 1] - corners[:, 0], corners[:, 3] - corners[:, 0]], axis=1)
    return np.stack([-edges[..., 1], edges[..., 0]], axis=-1)


def overlaps(a: list[Box2], b: list[Box2], gap: float = MIN_GAP) -> bool:
    """Whether two footprints come closer than ``gap`` (approximately: rectangles grown by gap / 2)."""
    ca, cb = _corners(a, gap / 2), _corners(b, gap / 2)
    na, nb = _normals(ca), _normals(cb)
    # a pair of rectangles is apart when one of its four edge normals separates their projections
    on_a = np.einsum("ikd,ijd->ikj", na, ca)[:, None]  # (n, 1, 2, 4)
    b_on_a = np.einsum("ikd,mjd->imkj", na, cb)  # (n, m, 2, 4)
    on_b = np.einsum("mkd,mjd->mkj", nb, cb)[None]  # (1, m, 2, 4)
    a_on_b = np.einsum("mkd,ijd->imkj", nb, ca)  # (n, m, 2, 4)
    apart = (on_a.max(-1) < b_on_a.min(-1)) | (b_on_a.max(-1) < on_a.min(-1))
    apart |= (on_b.max(-1) < a_on_b.min(-1)) | (a_on_b.max(-1) < on_b.min(-1))
    return bool(not apart.any(-1).all())


def inside(boxes: list[Box2], area: tuple[float, float, float, float]) -> bool:
    """Whether a footprint lies within the area (centre x, centre y, half x, half y)."""
    cx, cy, hx, hy = area
    pts = np.concatenate([b.corners() for b in boxes])
    return bool(np.all(np.abs(pts[:, 0] - cx) <= hx) and np.all(np.abs(pts[:, 1] - cy) <= hy))


def radius(obj: ObjectModel) -> float:
    """Distance from the object's origin to the farthest corner of its footprint."""
    return float(max(np.linalg.norm(b.corners(), axis=1).max() for b in footprint(obj, 0.0, 0.0, 0.0)))


@dataclass(frozen=True)
class Placement:
    """Where one object of a scene starts: position on the table and yaw."""

    x: float
    y: float
    yaw: float


def arrange(
    objects: list[ObjectModel], area: tuple[float, float, float, float], rng: random.Random
) -> list[Placement] | None:
    """Non-overlapping placements inside ``area`` for all objects, some right beside another; None if they
    do not fit after PLACE_TRIES draws for one of them."""
    placed: list[tuple[Placement, list[Box2]]] = []
    cx, cy, hx, hy = area
    for obj in objects:
        for _ in range(PLACE_TRIES):
            yaw = rng.uniform(-math.pi, math.pi)
            if placed and rng.random() < NEAR_SHARE:
                spot = _beside(obj, yaw, rng.choice(placed), rng)
            else:
                spot = (cx + rng.uniform(-hx, hx), cy + rng.uniform(-hy, hy))
            if spot is None:
                continue
            boxes = footprint(obj, spot[0], spot[1], yaw)
            if inside(boxes, area) and not any(overlaps(boxes, other) for _, other in placed):
                placed.append((Placement(spot[0], spot[1], yaw), boxes))
                break
        else:
            return None
    return [p for p, _ in placed]


def _beside(obj: ObjectModel, yaw: float, anchor: tuple[Placement, list[Box2]], rng: random.Random):
    """A spot in a random direction from the anchor, as close as the footprints allow plus up to CLOSE_GAP."""
    (a, boxes) = anchor
    heading = rng.uniform(-math.pi, math.pi)
    direction = np.array([math.cos(heading), math.sin(heading)])
    far = radius(obj) + max(np.linalg.norm(b.corners() - [a.x, a.y], axis=1).max() for b in boxes) + MIN_GAP
    near, distance = 0.0, far
    for _ in range(10):  # bisect for the distance at which the footprints just touch
        middle = (near + distance) / 2
        if overlaps(footprint(obj, *(np.array([a.x, a.y]) + direction * middle), yaw), boxes):
            near = middle
        else:
            distance = middle
    distance += rng.uniform(0.0, CLOSE_GAP)
    x, y = np.array([a.x, a.y]) + direction * distance
    return float(x), float(y)


# ---------------------------------------------------------------- words for attributes

# Hue sectors (degrees) and their colour word; a hue within HUE_MARGIN of a border has no word.
HUE_WORDS = ((0, 15, "red"), (15, 45, "orange"), (45, 70, "yellow"), (70, 165, "green"), (165, 255, "blue"))
HUE_WORDS += ((255, 290, "purple"), (290, 345, "pink"), (345, 360, "red"))
HUE_MARGIN = 6.0
MIN_SATURATION = 0.3


def colour_word(rgba: tuple[float, ...]) -> str | None:
    """A plain colour word for a colour, or None when it sits too close to a border between two words."""
    r, g, b = rgba[:3]
    hi, lo = max(r, g, b), min(r, g, b)
    if hi <= 0 or (hi - lo) / hi < MIN_SATURATION:
        return None
    d = hi - lo
    if hi == r:
        hue = 60 * (((g - b) / d) % 6)
    elif hi == g:
        hue = 60 * ((b - r) / d + 2)
    else:
        hue = 60 * ((r - g) / d + 4)
    for start, end, word in HUE_WORDS:
        if start <= hue < end:
            borders = [hue - start] * (start != 0) + [end - hue] * (end != 360)
            return None if min(borders, default=HUE_MARGIN) < HUE_MARGIN else word
    return None


def main_colour(obj: ObjectModel) -> tuple[float, ...]:
    """The colour of the object's first (main) part."""
    return obj.colors.get(obj.parts[0], (0.5, 0.5, 0.5, 1.0))


def size_of(obj: ObjectModel) -> float:
    """A size to compare objects of one category by: the area of the footprint's bounding rectangles."""
    return float(sum(4 * b.hx * b.hy for b in footprint(obj, 0.0, 0.0, 0.0)))
