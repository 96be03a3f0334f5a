"""The simulated household object library: 19 categories from MuJoCo primitives.

Each object is a set of geoms, each belonging to a named part, plus grasp
regions that say where a parallel gripper coming from above may close (the
handle of a screwdriver, the rim of a mug, across a bottle's body) and where
it must not (a blade, a lens, a tip). Sizes, masses and colours are drawn per
instance within realistic ranges; every opening fits the Franka Hand (8 cm).
Object frame: x along the object's length, z up, origin at the table below it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_OPENING = 0.075  # the Franka Hand opens 8 cm; keep a margin
LABEL_SPACING = 0.01
"""Metres between labelled grasp centres along a region (a segment, a rim): half the finger pads' 2 cm,
so every point of an allowed region lies within a quarter pad of a label and a grasp the rectangle
metric should accept anywhere on it is accepted anywhere (IoU > 0.25 allows ~0.6 pad of shift)."""
ALONG_X = (1.0, 0.0, 0.0)  # zaxis that lays a capsule/cylinder along x
FORBIDDEN_PARTS = frozenset({"blade", "blades", "lenses", "tip"})
"""Parts no finger may touch: a blade, a lens, a tip (the part-aware metric and the trials both read this)."""


@dataclass(frozen=True)
class Geom:
    """One primitive of an object, in the object frame."""

    part: str
    type: str  # box | capsule | cylinder | sphere | ellipsoid (MuJoCo sizes)
    size: tuple[float, ...]
    pos: tuple[float, float, float]
    zaxis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    """Direction of the geom's local z (a capsule's or cylinder's axis)."""
    yaw: float = 0.0
    """Turn about the object's z before zaxis applies (boxes, ellipsoids)."""

    @property
    def volume(self) -> float:
        s = self.size
        if self.type == "box":
            return 8 * s[0] * s[1] * s[2]
        if self.type == "sphere":
            return 4 / 3 * math.pi * s[0] ** 3
        if self.type == "ellipsoid":
            return 4 / 3 * math.pi * s[0] * s[1] * s[2]
        if self.type == "cylinder":
            return math.pi * s[0] ** 2 * 2 * s[1]
        return math.pi * s[0] ** 2 * 2 * s[1] + 4 / 3 * math.pi * s[0] ** 3  # capsule

    def lowest_z(self) -> float:
        """Lowest point of the geom in the object frame (boxes and ellipsoids stay upright)."""
        s = self.size
        if self.type in ("box", "ellipsoid"):
            half = s[2]
        elif self.type == "sphere":
            half = s[0]
        else:  # capsule / cylinder along zaxis
            az = abs(self.zaxis[2]) / math.sqrt(sum(v * v for v in self.zaxis))
            radial = s[0] * math.sqrt(max(0.0, 1 - az**2)) if self.type == "cylinder" else s[0]
            half = az * s[1] + radial
        return self.pos[2] - float(half)

    def orientation_xml(self) -> str:
        if self.type in ("capsule", "cylinder"):
            return 'zaxis="' + " ".join(f"{v:.5f}" for v in self.zaxis) + '"'
        return f'euler="0 0 {self.yaw:.5f}"'


@dataclass(frozen=True)
class GraspRegion:
    """Where (and whether) a top-down parallel grasp may close, in the object frame.

    Grasp centres lie on the segment start→end; the closing axis is ``axis``
    (a direction in the object's xy-plane), or any direction when None (round
    parts). ``opening`` is the object's extent across the axis at the region.
    """

    part: str
    allowed: bool
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    axis: tuple[float, float] | None
    opening: float


@dataclass(frozen=True)
class ObjectModel:
    """One object instance: geometry, mass, friction, colours per part and grasp regions."""

    category: str
    object_id: str
    geoms: tuple[Geom, ...]
    regions: tuple[GraspRegion, ...]
    mass: float
    colors: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    friction: float = 1.0
    texture: str | None = None
    """Surface pattern of the main part: None (plain), or one of TEXTURES."""

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(g.part for g in self.geoms))

    def assets_mjcf(self, name: str) -> str:
        """Texture and material of the main part (empty when plain); goes in the model's <asset>."""
        if self.texture is None:
            return ""
        c1 = self.colors[self.parts[0]][:3]
        c2 = tuple(max(0.0, v * 0.6) for v in c1)
        rgb1, rgb2 = " ".join(f"{v:.3f}" for v in c1), " ".join(f"{v:.3f}" for v in c2)
        builtin, extra = TEXTURES[self.texture]
        return (
            f'<texture name="{name}_tex" type="2d" builtin="{builtin}" rgb1="{rgb1}" rgb2="{rgb2}" '
            f'markrgb="{rgb2}" width="64" height="64" {extra}/>'
            f'<material name="{name}_mat" texture="{name}_tex" texrepeat="3 3" texuniform="true"/>'
        )

    def to_mjcf(self, name: str, pos, yaw: float, base_z: float = 0.0) -> str:
        """A free body for MuJoCo resting at (x, y) on a surface at height ``base_z``, turned by yaw."""
        total = sum(g.volume for g in self.geoms)
        qw, qz = math.cos(yaw / 2), math.sin(yaw / 2)
        z = base_z + self.rest_offset
        lines = [f'<body name="{name}" pos="{pos[0]:.5f} {pos[1]:.5f} {z:.5f}" quat="{qw:.6f} 0 0 {qz:.6f}">']
        lines.append(f'  <freejoint name="{name}_joint"/>')
        main = self.parts[0]
        for i, g in enumerate(self.geoms):
            if self.texture is not None and g.part == main:
                look = f'material="{name}_mat"'
            else:
                look = 'rgba="' + " ".join(f"{c:.3f}" for c in self.colors.get(g.part, (0.5, 0.5, 0.5, 1.0))) + '"'
            mass = self.mass * g.volume / total
            lines.append(
                f'  <geom name="{name}_{i}_{g.part}" type="{g.type}" size="{" ".join(f"{v:.5f}" for v in g.size)}" '
                f'pos="{" ".join(f"{v:.5f}" for v in g.pos)}" {g.orientation_xml()} '
                f'mass="{mass:.6f}" {look} friction="{self.friction} 0.01 0.002" condim="6"/>'
            )
        lines.append("</body>")
        return "\n".join(lines)

    @property
    def rest_offset(self) -> float:
        """Height the body origin is placed at so that it rests on the table."""
        return -min(g.lowest_z() for g in self.geoms) + 0.001


def _region(part, allowed, start, end=None, axis=(0.0, 1.0), opening=0.02) -> GraspRegion:
    return GraspRegion(part, allowed, tuple(start), tuple(end or start), axis, min(opening, MAX_OPENING))


def _ring(part: str, radius: float, height: float, wall: float, z0: float = 0.0, n: int = 14) -> list[Geom]:
    """A hollow cylinder wall made of n boxes (primitives have no holes)."""
    side = 2 * radius * math.tan(math.pi / n) + 0.001
    return [
        Geom(
            part,
            "box",
            (wall / 2, side / 2, height / 2),
            (radius * math.cos(2 * math.pi * k / n), radius * math.sin(2 * math.pi * k / n), z0 + height / 2),
            yaw=2 * math.pi * k / n,
        )
        for k in range(n)
    ]


def _rim_regions(
    radius: float, z: float, wall: float, skip: Callable[[float], bool] = lambda a: False
) -> list[GraspRegion]:
    """Pinch grasps on a rim: one finger inside, one outside, closing radially, every ``LABEL_SPACING``
    around it (a round rim looks the same at every angle, so every angle of it is labelled)."""
    out = []
    count = 8 * math.ceil(2 * math.pi * radius / (8 * LABEL_SPACING))  # a multiple of the first datasets' 8
    for k in range(count):
        a = 2 * math.pi * k / count
        if skip(a):
            continue
        c = (radius * math.cos(a), radius * math.sin(a), z)
        out.append(_region("rim", True, c, axis=(math.cos(a), math.sin(a)), opening=wall + 0.03))
    return out


# ---------------------------------------------------------------- categories
# Each builder draws one instance's dimensions with rng and returns (geoms, regions, mass).


def _mug(r):
    radius, height, wall = r.uniform(0.035, 0.042), r.uniform(0.08, 0.10), 0.005
    grip_x, bar = radius + 0.03, 0.01
    geoms = _ring("rim", radius, height, wall) + [
        Geom("body", "cylinder", (radius, 0.004), (0, 0, 0.004)),
        Geom("handle", "box", (bar / 2, 0.008, height * 0.3), (grip_x, 0, height * 0.5)),
        Geom("handle", "box", (0.016, 0.008, bar / 2), (radius + 0.015, 0, height * 0.8)),
        Geom("handle", "box", (0.016, 0.008, bar / 2), (radius + 0.015, 0, height * 0.2)),
    ]
    regions = [_region("handle", True, (grip_x, 0, height * 0.55), axis=(1.0, 0.0), opening=bar + 0.03)]
    regions += _rim_regions(radius, height - 0.01, wall, skip=lambda a: abs(math.sin(a / 2)) < 0.3)
    return geoms, regions, r.uniform(0.25, 0.35)


def _cup(r):
    radius, height, wall = r.uniform(0.026, 0.031), r.uniform(0.08, 0.11), 0.004
    geoms = _ring("rim", radius, height, wall, n=12) + [Geom("body", "cylinder", (radius, 0.004), (0, 0, 0.004))]
    regions = [_region("body", True, (0, 0, height * 0.6), axis=None, opening=2 * radius + wall + 0.015)]
    regions += _rim_regions(radius, height - 0.01, wall)
    return geoms, regions, r.uniform(0.05, 0.15)


def _bottle(r):
    radius, half = r.uniform(0.026, 0.033), r.uniform(0.07, 0.09)
    neck_r, neck_half = radius * 0.45, 0.02
    neck_x = half + neck_half
    geoms = [
        Geom("body", "cylinder", (radius, half), (0, 0, radius), ALONG_X),
        Geom("neck", "cylinder", (neck_r, neck_half), (neck_x, 0, radius), ALONG_X),
        Geom("cap", "cylinder", (neck_r * 1.15, 0.008), (neck_x + neck_half + 0.008, 0, radius), ALONG_X),
    ]
    regions = [
        _region("body", True, (-half * 0.6, 0, radius), (half * 0.6, 0, radius), opening=2 * radius + 0.012),
        _region("neck", True, (neck_x, 0, radius), opening=2 * neck_r + 0.02),
        _region("body", False, (0, 0, radius), axis=(1.0, 0.0), opening=2 * half),  # along: does not fit
    ]
    return geoms, regions, r.uniform(0.3, 0.5)


def _can(r):
    radius, height = r.uniform(0.028, 0.033), r.uniform(0.09, 0.12)
    geoms = [Geom("body", "cylinder", (radius, height / 2), (0, 0, height / 2))]
    return (
        geoms,
        [_region("body", True, (0, 0, height * 0.65), axis=None, opening=2 * radius + 0.01)],
        r.uniform(0.2, 0.35),
    )


def _ball(r):
    radius = r.uniform(0.028, 0.035)
    geoms = [Geom("center", "sphere", (radius,), (0, 0, radius))]
    return (
        geoms,
        [_region("center", True, (0, 0, radius), axis=None, opening=2 * radius + 0.008)],
        r.uniform(0.05, 0.15),
    )


def _box(r):
    sx, sy, sz = r.uniform(0.08, 0.13), r.uniform(0.04, 0.06), r.uniform(0.04, 0.07)
    geoms = [Geom("sides", "box", (sx / 2, sy / 2, sz / 2), (0, 0, sz / 2))]
    regions = [
        _region("sides", True, (-sx * 0.25, 0, sz * 0.6), (sx * 0.25, 0, sz * 0.6), opening=sy + 0.015),
        _region("corner", False, (sx / 2, sy / 2, sz * 0.6), axis=(0.7071, -0.7071), opening=0.03),
        _region("sides", False, (0, 0, sz * 0.6), axis=(1.0, 0.0), opening=sx),
    ]
    return geoms, regions, r.uniform(0.1, 0.3)


def _book(r):
    sx, sy, sz = r.uniform(0.12, 0.16), r.uniform(0.05, 0.06), r.uniform(0.02, 0.03)
    geoms = [
        Geom("pages", "box", (sx / 2, sy / 2 - 0.002, sz / 2), (0, 0.002, sz / 2)),
        Geom("spine", "box", (sx / 2, 0.002, sz / 2), (0, -sy / 2 + 0.002, sz / 2)),
    ]
    regions = [
        _region("edges", True, (-sx * 0.3, 0, sz * 0.5), (sx * 0.3, 0, sz * 0.5), opening=sy + 0.015),
        _region("edges", False, (0, 0, sz * 0.5), axis=(1.0, 0.0), opening=sx),
    ]
    return geoms, regions, r.uniform(0.15, 0.3)


def _tool(handle_r, handle_half, tool: list[Geom], tool_regions, mass, handle_type="capsule"):
    """A handle along −x from the origin, and whatever the tool carries along +x."""
    hz = handle_r
    size = (handle_r, handle_half) if handle_type != "box" else (handle_half, handle_r, handle_r)
    geoms = [Geom("handle", handle_type, size, (-handle_half, 0, hz), ALONG_X)] + tool
    regions = [
        _region("handle", True, (-handle_half * 1.5, 0, hz), (-handle_half * 0.5, 0, hz), opening=2 * handle_r + 0.015),
        _region("handle", False, (-handle_half, 0, hz), axis=(1.0, 0.0), opening=2 * handle_half),
    ] + tool_regions
    return geoms, regions, mass


def _screwdriver(r):
    hr, hh, shaft = r.uniform(0.012, 0.016), r.uniform(0.045, 0.055), r.uniform(0.06, 0.09)
    tool = [
        Geom("shaft", "cylinder", (0.003, shaft / 2), (shaft / 2, 0, hr), ALONG_X),
        Geom("tip", "box", (0.006, 0.004, 0.0015), (shaft + 0.006, 0, hr)),
    ]
    return _tool(hr, hh, tool, [_region("tip", False, (shaft + 0.006, 0, hr), opening=0.012)], r.uniform(0.08, 0.15))


def _hammer(r):
    hr, hh = 0.011, r.uniform(0.09, 0.12)
    head_w = r.uniform(0.045, 0.055)
    tool = [Geom("head", "box", (0.014, head_w, 0.014), (0.014, 0, 0.014))]
    return _tool(hr, hh, tool, [], r.uniform(0.3, 0.45), handle_type="box")


def _flat_tool(tool_part, allowed: bool, length, width, thick, handle_r, handle_half, mass, shape="box"):
    dims = (length / 2, width / 2, thick / 2)
    tool = [Geom(tool_part, shape, dims, (length / 2, 0, thick / 2))]
    bad = [] if allowed else [_region(tool_part, False, (length / 2, 0, thick / 2), opening=width + 0.01)]
    return _tool(handle_r, handle_half, tool, bad, mass)


def _spoon(r):
    return _flat_tool(
        "bowl", True, 0.05, 0.036, 0.012, 0.008, r.uniform(0.05, 0.065), r.uniform(0.03, 0.06), "ellipsoid"
    )


def _spatula(r):
    return _flat_tool(
        "blade",
        False,
        r.uniform(0.06, 0.08),
        r.uniform(0.05, 0.065),
        0.004,
        0.01,
        r.uniform(0.055, 0.07),
        r.uniform(0.06, 0.1),
    )


def _knife(r):
    return _flat_tool(
        "blade", False, r.uniform(0.09, 0.11), 0.018, 0.004, 0.01, r.uniform(0.045, 0.055), r.uniform(0.05, 0.09)
    )


def _pen(r):
    radius, half = r.uniform(0.008, 0.011), r.uniform(0.06, 0.07)
    geoms = [
        Geom("barrel", "cylinder", (radius, half), (0, 0, radius), ALONG_X),
        Geom("cap", "cylinder", (radius * 1.1, 0.02), (-half + 0.02, 0, radius * 1.1), ALONG_X),
        Geom("tip", "capsule", (radius * 0.4, 0.006), (half + 0.006, 0, radius), ALONG_X),
        Geom("cap", "box", (0.015, 0.002, 0.003), (-half + 0.025, 0, 2 * radius * 1.1 + 0.002)),  # clip: stops rolling
    ]
    regions = [
        _region("barrel", True, (-half * 0.3, 0, radius), (half * 0.5, 0, radius), opening=2 * radius + 0.015),
        _region("tip", False, (half + 0.006, 0, radius), opening=0.012),
    ]
    return geoms, regions, r.uniform(0.015, 0.03)


def _toy_block(r):
    s = r.uniform(0.03, 0.05)
    geoms = [Geom("sides", "box", (s / 2, s / 2, s / 2), (0, 0, s / 2))]
    regions = [_region("sides", True, (0, 0, s * 0.6), axis=a, opening=s + 0.015) for a in ((1.0, 0.0), (0.0, 1.0))]
    return geoms, regions, r.uniform(0.02, 0.06)


def _bowl(r):
    radius, height, wall = r.uniform(0.06, 0.075), r.uniform(0.045, 0.06), 0.005
    geoms = _ring("wall", radius, height, wall, n=18) + [Geom("wall", "cylinder", (radius * 0.8, 0.004), (0, 0, 0.004))]
    return geoms, _rim_regions(radius, height - 0.01, wall), r.uniform(0.15, 0.3)


def _plate(r):
    radius, wall = r.uniform(0.08, 0.1), 0.005
    geoms = _ring("rim", radius, 0.025, wall, n=20) + [Geom("center", "cylinder", (radius, 0.003), (0, 0, 0.003))]
    regions = _rim_regions(radius, 0.016, wall) + [_region("center", False, (0, 0, 0.006), axis=None, opening=0.02)]
    return geoms, regions, r.uniform(0.2, 0.35)


def _scissors(r):
    blade = r.uniform(0.07, 0.09)
    geoms = [
        Geom("handles", "capsule", (0.008, 0.03), (-0.035, 0.012, 0.008), ALONG_X),
        Geom("handles", "capsule", (0.008, 0.03), (-0.035, -0.012, 0.008), ALONG_X),
        Geom("pivot", "cylinder", (0.008, 0.006), (0, 0, 0.006)),
        Geom("blades", "box", (blade / 2, 0.005, 0.0025), (blade / 2, 0.003, 0.003), yaw=0.05),
        Geom("blades", "box", (blade / 2, 0.005, 0.0025), (blade / 2, -0.003, 0.003), yaw=-0.05),
    ]
    regions = [
        _region("handles", True, (-0.035, 0, 0.008), (-0.02, 0, 0.008), opening=0.06),
        _region("blades", False, (blade * 0.6, 0, 0.003), opening=0.025),
    ]
    return geoms, regions, r.uniform(0.05, 0.1)


def _sunglasses(r):
    width, lens_r = r.uniform(0.13, 0.145), r.uniform(0.022, 0.027)
    geoms = [
        Geom("frame", "box", (width / 2, 0.005, 0.012), (0, 0, 0.012)),
        Geom("lenses", "cylinder", (lens_r, 0.003), (-width / 4, lens_r + 0.005, 0.003)),
        Geom("lenses", "cylinder", (lens_r, 0.003), (width / 4, lens_r + 0.005, 0.003)),
        Geom("arms", "box", (width * 0.45, 0.003, 0.004), (0, -0.015, 0.004)),
    ]
    regions = [
        _region("bridge", True, (0, 0, 0.012), opening=0.035),
        _region("frame", True, (-width * 0.35, 0, 0.012), (width * 0.35, 0, 0.012), opening=0.035),
        _region("lenses", False, (-width / 4, lens_r + 0.005, 0.003), (width / 4, lens_r + 0.005, 0.003), opening=0.03),
    ]
    return geoms, regions, r.uniform(0.03, 0.05)


def _banana(r):
    radius, seg, bend = r.uniform(0.016, 0.02), r.uniform(0.035, 0.045), r.uniform(0.35, 0.5)
    geoms = [Geom("middle", "capsule", (radius, seg), (0, 0, radius), ALONG_X)]
    for side in (-1, 1):
        cx = side * seg * (1 + math.cos(bend))
        cy = seg * math.sin(bend)
        axis = (math.cos(bend), side * math.sin(bend), 0.0)
        geoms.append(Geom("stem" if side > 0 else "middle", "capsule", (radius * 0.9, seg), (cx, cy, radius), axis))
    regions = [_region("middle", True, (-seg * 0.5, 0, radius), (seg * 0.5, 0, radius), opening=2 * radius + 0.015)]
    return geoms, regions, r.uniform(0.12, 0.2)


BUILDERS: dict[str, Callable[[random.Random], tuple[list[Geom], list[GraspRegion], float]]] = {
    "mug": _mug,
    "cup": _cup,
    "bottle": _bottle,
    "can": _can,
    "ball": _ball,
    "box": _box,
    "book": _book,
    "screwdriver": _screwdriver,
    "hammer": _hammer,
    "spoon": _spoon,
    "spatula": _spatula,
    "knife": _knife,
    "scissors": _scissors,
    "sunglasses": _sunglasses,
    "banana": _banana,
    "pen": _pen,
    "toy block": _toy_block,
    "bowl": _bowl,
    "plate": _plate,
}
CATEGORIES = tuple(BUILDERS)

# MuJoCo built-in textures for the main part: name → (builtin, extra attributes).
TEXTURES = {
    "speckle": ("flat", 'mark="random" random="0.08"'),
    "checker": ("checker", ""),
    "gradient": ("gradient", ""),
}
PLAIN_SHARE = 0.5  # half of all objects stay plain

# Colours per part: a hue drawn per instance, with fixed looks for metal, lenses and fruit.
FIXED_COLORS = {
    "shaft": (0.75, 0.75, 0.78, 1),
    "tip": (0.6, 0.6, 0.62, 1),
    "blade": (0.8, 0.8, 0.82, 1),
    "blades": (0.8, 0.8, 0.82, 1),
    "lenses": (0.08, 0.08, 0.1, 1),
    "head": (0.35, 0.35, 0.38, 1),
    "pivot": (0.7, 0.7, 0.7, 1),
}


def make_object(category: str, rng: random.Random, object_id: str | None = None) -> ObjectModel:
    """Draw one instance of a category."""
    if category not in BUILDERS:
        raise ValueError(f"unknown object category {category!r}; known: {', '.join(CATEGORIES)}")
    geoms, regions, mass = BUILDERS[category](rng)
    main = _random_color(rng) if category != "banana" else (0.95, 0.82, 0.2, 1.0)
    accent = _random_color(rng) if category != "banana" else (0.85, 0.75, 0.25, 1.0)
    colors = {}
    for i, part in enumerate(dict.fromkeys(g.part for g in geoms)):
        colors[part] = FIXED_COLORS.get(part, main if i == 0 else accent)
    texture = None if rng.random() < PLAIN_SHARE or category == "banana" else rng.choice(sorted(TEXTURES))
    return ObjectModel(
        category, object_id or category, tuple(geoms), tuple(regions), mass, colors, rng.uniform(0.9, 1.2), texture
    )


def _random_color(rng: random.Random) -> tuple[float, float, float, float]:
    h, s, v = rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.35, 0.95)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (*rgb, 1.0)
