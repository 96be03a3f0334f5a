"""What counts as a good grasp in the sim cell, and the cluttered scenes its trials run in.

A trial succeeds when the instruction's object is lifted, every finger contact on it lies on an allowed
grasp region (within ``REGION_TOLERANCE`` of the region's segment plus half its opening, in the object's
table plane) and none on a forbidden part (``FORBIDDEN_PARTS``), and no other object on the table moved
more than ``OTHERS_MOVED_M``. Pure functions of the poses and contacts the cell reports.
"""

from __future__ import annotations

import math
import random

import numpy as np

from appliance.geometry import invert, pose_matrix, transform_points

from .clutter import arrange
from .objects import FORBIDDEN_PARTS, ObjectModel

REGION_TOLERANCE = 0.01  # metres: the part-aware metric's centre tolerance
OTHERS_MOVED_M = 0.02
LIFT_SUCCESS_M = 0.05  # a lifted object's centre of mass rose this much, and it left the table
SCENE_DRAWS = 20


def quat_pose(p) -> np.ndarray:
    """4×4 pose from [x, y, z, qw, qx, qy, qz]."""
    x, y, z, w, qx, qy, qz = p
    R = np.array(
        [
            [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * w), 2 * (qx * qz + qy * w)],
            [2 * (qx * qy + qz * w), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * w)],
            [2 * (qx * qz - qy * w), 2 * (qy * qz + qx * w), 1 - 2 * (qx * qx + qy * qy)],
        ]
    )
    return pose_matrix(R, (x, y, z))


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = 0.0 if not ab.any() else float(np.clip((p - a) @ ab / (ab @ ab), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def held_by_allowed_part(obj: ObjectModel, pose: list[float], fingers: list[dict]) -> tuple[bool, str]:
    """Whether the finger contacts (``part``, world ``pos``) of an object at ``pose`` all lie on allowed regions;
    the reason when not."""
    if not fingers:
        return False, "no finger touches it"
    to_object = invert(quat_pose(pose))
    for contact in fingers:
        if contact["part"] in FORBIDDEN_PARTS:
            return False, f"a finger on the {contact['part']}"
        local = transform_points(to_object, np.array([contact["pos"]], dtype=float))[0][:2]
        near = [
            r
            for r in obj.regions
            if r.allowed
            and _segment_distance(local, np.array(r.start[:2]), np.array(r.end[:2])) <= r.opening / 2 + REGION_TOLERANCE
        ]
        if not near:
            return False, f"a finger on the {contact['part']}, off every allowed region"
    return True, ""


def others_moved(before: dict[str, dict], after: dict[str, dict], target: str) -> float:
    """The largest distance (metres) any other object on the table moved, centre of mass to centre of mass."""
    moved = [
        math.dist(before[k]["com"], after[k]["com"]) for k, state in before.items() if k != target and state["on_table"]
    ]
    return max(moved, default=0.0)


def lifted(before: dict[str, dict], after: dict[str, dict]) -> list[str]:
    """The objects that left the table, their centre of mass risen at least ``LIFT_SUCCESS_M``, from the
    cell's states before and after a grasp (whatever the instruction meant)."""
    return [
        k
        for k, state in after.items()
        if before[k]["on_table"] and not state["on_table"] and state["com"][2] - before[k]["com"][2] >= LIFT_SUCCESS_M
    ]


def clutter_scene(objects: list[ObjectModel], target: int, count: int, area, rng: random.Random) -> list[dict] | None:
    """Placements (``{"object", "x", "y", "yaw"}``) of the target and ``count - 1`` others drawn from ``objects``,
    none overlapping, inside ``area`` (centre x, centre y, half x, half y); None if no draw fits."""
    if not 1 <= count <= len(objects):
        raise ValueError(f"a scene of {count} objects needs 1..{len(objects)} (the cell's objects)")
    others = [i for i in range(len(objects)) if i != target]
    for _ in range(SCENE_DRAWS):
        chosen = [target] + rng.sample(others, count - 1)
        placements = arrange([objects[i] for i in chosen], area, rng)
        if placements is not None:
            return [
                {"object": objects[i].object_id, "x": p.x, "y": p.y, "yaw": p.yaw} for i, p in zip(chosen, placements)
            ]
    return None
