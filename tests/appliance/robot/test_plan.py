import math

import numpy as np
import pytest

from appliance.geometry import SurfaceGrasp
from appliance.robot.plan import (
    GraspLimits,
    GraspResult,
    MotionError,
    UnsafeTarget,
    Workspace,
    execute,
    plan_top_down,
    tcp_pose,
)

CAMERA = np.array([0.5, 0.0, 0.7])


def seen(x, y, top, angle=0.0):
    """What the top-down camera at CAMERA sees: the surface point and the ray to it."""
    point = np.array([x, y, top])
    return SurfaceGrasp(point, angle, CAMERA, point - CAMERA, top)


@pytest.mark.parametrize("angle", [0.0, 0.4, math.pi / 2, -1.2, 3.0])
def test_tcp_pose_closes_along_the_requested_axis(angle):
    T = tcp_pose(0.5, 0.0, 0.1, angle)
    finger_axis = T[:3, 1]  # the Franka Hand's fingers move along the TCP's y axis
    assert abs(abs(finger_axis @ np.array([math.cos(angle), math.sin(angle), 0.0])) - 1) < 1e-9
    assert np.allclose(T[:3, 2], [0, 0, -1])  # pointing down
    yaw = math.atan2(T[1, 0], T[0, 0])
    assert -math.pi / 2 <= yaw < math.pi / 2 + 1e-9


def test_plan_keeps_fingertips_off_the_table_and_refuses_outside_targets():
    plan = plan_top_down(seen(0.5, 0.0, 0.015))
    assert plan.grasp[2, 3] == pytest.approx(GraspLimits().min_tcp_z)
    assert plan.pre_grasp[2, 3] > plan.grasp[2, 3] and plan.lift[2, 3] > plan.grasp[2, 3]
    with pytest.raises(UnsafeTarget, match="outside the workspace"):
        plan_top_down(seen(0.95, 0.0, 0.05))
    with pytest.raises(UnsafeTarget):
        plan_top_down(seen(0.5, 0.0, 0.05), Workspace(z=(0.008, 0.1)))


def test_grasp_centre_follows_the_camera_ray_down_to_the_finger_height():
    """A ball seen off-axis: its top is seen 0.1 m from the axis; its centre lies further out on that ray."""
    top = seen(0.6, 0.0, 0.064)
    plan = plan_top_down(top)
    z = 0.064 - GraspLimits().grasp_depth
    assert plan.grasp[2, 3] == pytest.approx(z)
    assert plan.grasp[0, 3] == pytest.approx(0.5 + 0.1 * (0.7 - z) / (0.7 - 0.064))
    assert plan.grasp[0, 3] > 0.6


def test_speeds_can_only_be_lowered():
    plan = plan_top_down(seen(0.5, 0.0, 0.05))
    slow = plan.slowed(0.5)
    assert slow.limits.speed == pytest.approx(plan.limits.speed / 2)
    assert slow.limits.timeout_s == pytest.approx(plan.limits.timeout_s * 2)  # half the speed, twice the time allowed
    with pytest.raises(ValueError):
        plan.slowed(1.5)
    with pytest.raises(ValueError):
        GraspLimits(speed=0.1, approach_speed=0.2)


class ScriptedArm:
    """Records calls; the grasp and the width after it are scripted (our own Arm protocol)."""

    def __init__(self, grasp_ok=True, width=0.03, fail_at=None, held=True):
        self.calls, self.grasp_ok, self.width, self.fail_at, self.held = [], grasp_ok, width, fail_at, held

    def move_pose(self, target, speed):
        self.calls.append(("move", round(float(target[2, 3]), 3), speed))
        if self.fail_at == len(self.calls):
            raise MotionError("target not reached")

    def open_gripper(self, width):
        self.calls.append(("open", width))

    def grasp(self, width, force, epsilon_inner, epsilon_outer):
        self.calls.append(("grasp", width - epsilon_inner, width + epsilon_outer))
        return self.grasp_ok

    def gripper_width(self):
        return self.width

    def is_grasped(self):
        return self.held


def test_execute_runs_the_stages_in_order_with_tight_epsilons():
    plan = plan_top_down(seen(0.5, 0.0, 0.05))
    arm = ScriptedArm()
    result = execute(arm, plan)
    assert result.success and result.stage == "verify"
    kinds = [c[0] for c in arm.calls]
    assert kinds == ["open", "move", "move", "grasp", "move"]
    lo, hi = arm.calls[3][1:]
    assert lo == pytest.approx(plan.limits.min_width) and hi == pytest.approx(plan.limits.max_width)
    assert arm.calls[2][2] == plan.limits.approach_speed  # the descent is slow


@pytest.mark.parametrize(
    "arm, stage, message",
    [
        (ScriptedArm(grasp_ok=False), "close", "closed on nothing"),
        (ScriptedArm(width=0.0), "verify", "slipped"),
        (ScriptedArm(held=False), "verify", "slipped"),  # width in range, but the hand lost its grip
        (ScriptedArm(fail_at=2), "pre-grasp", "not reached"),
    ],
)
def test_execute_reports_where_it_stopped(arm, stage, message):
    result = execute(arm, plan_top_down(seen(0.5, 0.0, 0.05)))
    assert isinstance(result, GraspResult) and not result.success
    assert result.stage == stage and message in result.message
