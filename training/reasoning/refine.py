"""Refinement turns: a follow-up request for a different grasp, its target, and the check.

Three kinds: ``part`` (grasp another named part), ``rotate`` (turn the gripper
by about 90°), ``side`` (move the grasp left/right/up/down as displayed).
A target is always one of the image's ground-truth grasps, so it is a valid
grasp; ``satisfies`` is the check the evaluation uses on a model's answer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.grasp import GraspPose, angle_difference

KINDS = ("part", "rotate", "side")
SIDES = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "top": (0.0, -1.0), "bottom": (0.0, 1.0)}
MIN_ROTATION = math.radians(60)
"""A 'rotate by 90°' answer must turn the gripper at least this much."""
MIN_SHIFT = 0.05
"""A 'move to the side' answer must move at least this far (fraction of the image)."""


@dataclass(frozen=True)
class Refinement:
    """A follow-up request: its kind and, for part and side, which one."""

    kind: str
    part: str | None = None
    side: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown refinement kind {self.kind!r}: expected one of {KINDS}")
        if (self.kind == "part") != (self.part is not None):
            raise ValueError("a part refinement names a part, and only it does")
        if (self.kind == "side") != (self.side in SIDES):
            raise ValueError(f"a side refinement names one of {sorted(SIDES)}, and only it does")

    def to_json(self) -> dict:
        return {k: v for k, v in (("kind", self.kind), ("part", self.part), ("side", self.side)) if v is not None}


def satisfies(request: Refinement, before: GraspPose, after: GraspPose, after_part: str | None = None) -> bool:
    """Whether the new pose does what was asked (validity as a grasp is checked separately)."""
    if request.kind == "rotate":
        return angle_difference(before.theta, after.theta) >= MIN_ROTATION
    if request.kind == "side":
        dx, dy = SIDES[request.side]
        return (after.x - before.x) * dx + (after.y - before.y) * dy >= MIN_SHIFT
    return after_part == request.part


def candidates(request: Refinement, current: int, poses: Sequence[GraspPose], parts: Sequence[str] = ()) -> list[int]:
    """Ground-truth grasps (by index) that satisfy the request, nearest to the current one first."""
    before = poses[current]
    part_of = (lambda i: parts[i]) if parts else (lambda i: None)
    matching = [i for i in range(len(poses)) if i != current and satisfies(request, before, poses[i], part_of(i))]
    return sorted(matching, key=lambda i: math.hypot(poses[i].x - before.x, poses[i].y - before.y))


def possible_requests(current: int, poses: Sequence[GraspPose], parts: Sequence[str] = ()) -> list[Refinement]:
    """Every request that has at least one valid target for this grasp."""
    requests = [Refinement("rotate")] + [Refinement("side", side=s) for s in SIDES]
    if parts:
        requests += [Refinement("part", part=p) for p in sorted(set(parts)) if p != parts[current]]
    return [r for r in requests if candidates(r, current, poses, parts)]


def draw_refinement(
    rng: random.Random, current: int, poses: Sequence[GraspPose], parts: Sequence[str] = ()
) -> tuple[Refinement, int] | None:
    """A random feasible request and its target (the nearest satisfying grasp), or None."""
    requests = possible_requests(current, poses, parts)
    if not requests:
        return None
    by_kind: dict[str, list[Refinement]] = {}
    for r in requests:
        by_kind.setdefault(r.kind, []).append(r)
    request = rng.choice(by_kind[rng.choice(sorted(by_kind))])  # kinds equally likely
    return request, candidates(request, current, poses, parts)[0]
