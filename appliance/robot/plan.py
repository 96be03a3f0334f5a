"""Grasp plans: what the arm will do, checked against the workspace before anything moves.

A ``GraspPlan`` holds every pose of a top-down grasp (pre-grasp above the
target, the grasp itself, the lift), the gripper settings and the speeds. It
is built and checked by pure functions; ``execute`` runs it on any arm with
one call and reports where it stopped. Speeds can only be lowered.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from appliance.geometry import SurfaceGrasp, pose_matrix, rotation_z

TOP_DOWN = np.diag([1.0, -1.0, -1.0])
"""TCP orientation looking straight down; the Franka Hand's fingers close along the TCP's y axis."""


class UnsafeTarget(ValueError):
    """A grasp target outside the configured workspace; nothing moves."""


class MotionError(RuntimeError):
    """A motion that failed or ended away from its target (the arm backend recovers first)."""


@dataclass(frozen=True)
class Workspace:
    """The box (robot base frame, metres) every commanded TCP position must stay in."""

    x: tuple[float, float] = (0.3, 0.75)
    y: tuple[float, float] = (-0.3, 0.3)
    z: tuple[float, float] = (0.008, 0.45)

    def __post_init__(self) -> None:
        for axis in ("x", "y", "z"):
            bounds = getattr(self, axis)
            if len(bounds) != 2 or not all(math.isfinite(v) for v in bounds) or not bounds[0] < bounds[1]:
                raise ValueError(f"workspace.{axis} must be [low, high] in metres, finite, low < high; got {bounds}")

    def contains(self, p) -> bool:
        return all(lo <= v <= hi for v, (lo, hi) in zip(p, (self.x, self.y, self.z)))


MAX_HAND_FORCE_N = 70.0
"""The Franka Hand's continuous grasping force; a config asking for more is a typo, not a stronger grip."""


@dataclass(frozen=True)
class GraspLimits:
    """Motion and gripper settings of a grasp."""

    speed: float = 0.3  # m/s between poses
    approach_speed: float = 0.1  # m/s down to the object and for the lift
    pre_grasp_height: float = 0.08  # above the grasp pose
    lift_height: float = 0.15
    grasp_depth: float = 0.03  # TCP below the object's top surface
    min_tcp_z: float = 0.012  # fingertips stay clear of the table
    open_width: float = 0.08
    force: float = 40.0  # N
    min_width: float = 0.002  # a grasp closing below this holds nothing (a pinched wall reads ~4 mm)
    max_width: float = 0.079
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("speed", "approach_speed", "force", "timeout_s", "open_width"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number above 0, got {value}")
        for name in ("pre_grasp_height", "lift_height", "grasp_depth", "min_tcp_z"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of metres, 0 or more, got {value}")
        if self.force > MAX_HAND_FORCE_N:
            raise ValueError(f"force must be at most {MAX_HAND_FORCE_N:.0f} N (the Franka Hand's continuous force)")
        if not 0 < self.approach_speed <= self.speed:
            raise ValueError("approach_speed must be positive and not above speed")
        if not 0 < self.min_width < self.max_width <= 0.08:
            raise ValueError("need 0 < min_width < max_width <= 0.08 (the Franka Hand's stroke)")


@dataclass(frozen=True)
class GraspPlan:
    """Every pose and setting of one top-down grasp (4×4 TCP poses in the base frame)."""

    pre_grasp: np.ndarray
    grasp: np.ndarray
    lift: np.ndarray
    limits: GraspLimits = field(default_factory=GraspLimits)

    def slowed(self, factor: float) -> GraspPlan:
        """The same plan at a fraction of its speeds (never raised), with its time limit stretched alike."""
        if not 0 < factor <= 1:
            raise ValueError(f"a speed factor must be in (0, 1], got {factor}")
        lim = self.limits
        return replace(
            self,
            limits=replace(
                lim,
                speed=lim.speed * factor,
                approach_speed=lim.approach_speed * factor,
                timeout_s=lim.timeout_s / factor,
            ),
        )


def tcp_pose(x: float, y: float, z: float, closing_angle: float) -> np.ndarray:
    """Top-down TCP pose whose jaws close along ``closing_angle`` (radians in the base xy-plane).

    The yaw is chosen modulo π (a parallel grasp is symmetric) to stay near the
    hand's neutral turn, which keeps joint 7 well inside its range.
    """
    yaw = closing_angle + math.pi / 2
    yaw = (yaw + math.pi / 2) % math.pi - math.pi / 2
    return pose_matrix(rotation_z(yaw) @ TOP_DOWN, (x, y, z))


def plan_top_down(
    target: SurfaceGrasp, workspace: Workspace = Workspace(), limits: GraspLimits = GraspLimits()
) -> GraspPlan:
    """Plan a top-down grasp of the object seen at ``target``; ``UnsafeTarget`` if any pose leaves the workspace.

    The fingers close ``grasp_depth`` below the highest surface between the jaws (never lower than
    ``min_tcp_z``), on the camera ray through the grasp centre: a round object
    seen off-axis is then grasped through its middle, not beside it.
    """
    z = max(target.top - limits.grasp_depth, limits.min_tcp_z)
    x, y, _ = target.at_height(z)
    poses = [tcp_pose(x, y, z + dz, target.closing_angle) for dz in (limits.pre_grasp_height, 0.0, limits.lift_height)]
    for name, pose in zip(("pre-grasp", "grasp", "lift"), poses):
        if not workspace.contains(pose[:3, 3]):
            raise UnsafeTarget(
                f"{name} position {np.round(pose[:3, 3], 3).tolist()} is outside the workspace {workspace}"
            )
    return GraspPlan(*poses, limits=limits)


class Arm(Protocol):
    """What a plan needs from an arm (the Franka backend, or anything that moves like one)."""

    def move_pose(self, target: np.ndarray, speed: float) -> None: ...
    def open_gripper(self, width: float) -> None: ...
    def grasp(self, width: float, force: float, epsilon_inner: float, epsilon_outer: float) -> bool: ...
    def gripper_width(self) -> float: ...
    def is_grasped(self) -> bool: ...


@dataclass(frozen=True)
class GraspResult:
    """How far a plan got: ``stage`` is the last step reached, ``success`` whether the hand holds the object at the end."""

    success: bool
    stage: str
    message: str = ""
    width: float = 0.0
    seconds: float = 0.0


def execute(arm: Arm, plan: GraspPlan) -> GraspResult:
    """Open, go above, descend, close, lift, verify. Any failure stops there and says where."""
    lim = plan.limits
    start = time.monotonic()
    mid = (lim.min_width + lim.max_width) / 2
    steps = [
        ("open", lambda: arm.open_gripper(lim.open_width)),
        ("pre-grasp", lambda: arm.move_pose(plan.pre_grasp, lim.speed)),
        ("approach", lambda: arm.move_pose(plan.grasp, lim.approach_speed)),
        ("close", lambda: arm.grasp(mid, lim.force, mid - lim.min_width, lim.max_width - mid)),
        ("lift", lambda: arm.move_pose(plan.lift, lim.approach_speed)),
    ]
    for stage, run in steps:
        if time.monotonic() - start > lim.timeout_s:
            return GraspResult(False, stage, f"timed out after {lim.timeout_s} s", seconds=time.monotonic() - start)
        try:
            outcome = run()
        except MotionError as exc:
            return GraspResult(False, stage, str(exc), seconds=time.monotonic() - start)
        if stage == "close" and not outcome:
            width = arm.gripper_width()
            message = f"the hand closed on nothing (width {1000 * width:.1f} mm; it holds {1000 * lim.min_width:.0f}–{1000 * lim.max_width:.0f})"
            return GraspResult(False, stage, message, width, time.monotonic() - start)
    width = arm.gripper_width()
    held = lim.min_width <= width <= lim.max_width and arm.is_grasped()  # the hand's own verdict too
    return GraspResult(
        held, "verify", "" if held else "object slipped during the lift", width, time.monotonic() - start
    )
