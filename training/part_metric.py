"""The part-aware grasp metric, from the simulator's ground truth (``pcdNNNNscene.json`` + ``pcdNNNNmask.png``).

A predicted top-down grasp of the instruction's target is correct when all of these hold:

- its centre lies within ``CENTRE_TOLERANCE`` (1 cm, in the plane of the region) of an allowed grasp
  region of the target;
- its closing axis is within ``ANGLE_TOLERANCE`` (30°) of that region's allowed direction (any
  direction on a round part);
- neither finger pad (``PAD_LENGTH`` 2 cm across the closing axis × ``PAD_DEPTH`` 1 cm along it, centred
  at ± half the region's opening) covers a pixel of a forbidden part of the target (a blade, a lens, a
  tip: ``FORBIDDEN_PARTS``) or of another object.

Nothing here is fitted to any predictor's score; the tolerances follow from the gripper (the Franka
Hand's 2 cm pads) and the rectangle metric's 30°.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from appliance.grasp import GraspPose, ImageSize, angle_difference
from appliance.sim.objects import FORBIDDEN_PARTS

from .datasets.referring import SceneTruth

CENTRE_TOLERANCE = 0.01  # metres in the table plane
ANGLE_TOLERANCE = math.radians(30.0)
PAD_LENGTH = 0.02  # metres across the closing axis (the Franka Hand's finger pad)
PAD_DEPTH = 0.01  # metres along the closing axis


@dataclass(frozen=True)
class PartScore:
    """How a pose fares under the part-aware metric; ``reason`` names the first failed condition."""

    correct: bool
    on_target: bool
    """The centre pixel is on the target's mask (the ``target_rate`` of the reports)."""
    reason: str = ""


def pad_pixels(centre: tuple[float, float], theta: float, offset: float, along: float, across: float, shape):
    """Row and column indices of the pixels inside one pad: a rectangle ``along`` × ``across`` pixels centred
    ``offset`` pixels from ``centre`` along the closing axis (image y points down)."""
    closing = np.array([math.cos(theta), -math.sin(theta)])
    jaw = np.array([math.sin(theta), math.cos(theta)])
    c = np.asarray(centre) + closing * offset
    reach = (abs(along) + abs(across)) / 2 + 1
    h, w = shape
    cols = np.arange(max(0, int(c[0] - reach)), min(w, int(c[0] + reach) + 1))
    rows = np.arange(max(0, int(c[1] - reach)), min(h, int(c[1] + reach) + 1))
    if not len(cols) or not len(rows):
        return rows[:0], cols[:0]
    uu, vv = np.meshgrid(cols + 0.5, rows + 0.5)
    d = np.stack([uu - c[0], vv - c[1]], axis=-1)
    inside = (np.abs(d @ closing) <= along / 2) & (np.abs(d @ jaw) <= across / 2)
    r, k = np.nonzero(inside)
    return rows[r], cols[k]


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = 0.0 if not ab.any() else float(np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def score_part(pose: GraspPose, scene: SceneTruth, target: int, image_size: ImageSize) -> PartScore:
    """Score one pose of the target object ``target`` of a scene (``image_size``: the scene's image)."""
    if not 0 <= target < len(scene.objects):
        raise ValueError(f"target {target} is not an object of the scene (it has {len(scene.objects)})")
    u, v = pose.pixel_center(image_size)
    on_target = scene.object_at(u, v) == target
    centre = np.array([u, v])
    near = [
        r
        for r in scene.objects[target]["regions"]
        if r["allowed"]
        and _segment_distance(centre, np.array(r["start"]), np.array(r["end"])) * r["mpp"] <= CENTRE_TOLERANCE
    ]
    if not near:
        return PartScore(False, on_target, "centre off every allowed region")
    aligned = [r for r in near if r["angle"] is None or angle_difference(pose.theta, r["angle"]) <= ANGLE_TOLERANCE]
    if not aligned:
        return PartScore(False, on_target, "closing axis not allowed there")
    for region in aligned:
        touched = _pads_touch(centre, pose.theta, region, scene, target)
        if touched is None:
            return PartScore(True, on_target)
    return PartScore(False, on_target, touched)


def _pads_touch(centre: np.ndarray, theta: float, region: dict, scene: SceneTruth, target: int) -> str | None:
    """What a finger pad lands on that it must not (None: nothing)."""
    along, across = PAD_DEPTH / region["mpp"], PAD_LENGTH / region["mpp"]
    for side in (-1.0, 1.0):
        rows, cols = pad_pixels(centre, theta, side * region["opening"] / 2, along, across, scene.mask.shape)
        for value in np.unique(scene.mask[rows, cols]):
            if value == 0:
                continue
            k, part = scene.segments[value - 1]
            if k != target:
                return "a finger pad on another object"
            if part in FORBIDDEN_PARTS:
                return f"a finger pad on the {part}"
    return None
