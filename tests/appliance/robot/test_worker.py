"""The arm in its own process, against franky-sim: commands, a stop mid-motion, recovery, a dead child."""

import threading
import time

import numpy as np
import pytest

pytest.importorskip("franky_sim")
pytest.importorskip("pylibfranka")

from appliance.robot.franka import FrankaConfig  # noqa: E402
from appliance.robot.plan import MotionError  # noqa: E402
from appliance.robot.worker import ArmPoses, RobotProcess, RobotUnavailable  # noqa: E402
from appliance.sim.cell import OBSERVATION_Q, READY_Q  # noqa: E402
from tests.helpers import sim_cell  # noqa: E402

JOINT_TOL = 0.06  # rad: joint impedance control settles a few hundredths off its target under gravity


@pytest.fixture(scope="module")
def robot(tmp_path_factory):
    with sim_cell(tmp_path_factory.mktemp("cell")) as cell:
        arm = RobotProcess(FrankaConfig(host=cell.robot_host), ArmPoses(OBSERVATION_Q, READY_Q)).start()
        yield arm
        arm.close()


def test_named_poses_and_state(robot):
    robot.call("ready")
    state = robot.call("state")
    assert np.allclose(state["joints"], READY_Q, atol=JOINT_TOL)
    assert np.array(state["pose"]).shape == (4, 4)


def test_stop_mid_motion_ramps_down_and_the_next_motion_works(robot):
    robot.call("ready")
    timer = threading.Timer(0.4, robot.stop)
    timer.start()
    start = time.monotonic()
    with pytest.raises(MotionError, match="stopped"):
        robot.call("home")
    assert time.monotonic() - start < 2.0  # the 0.3 s ramp, not the whole motion
    stopped_at = np.array(robot.call("state")["joints"])
    assert not np.allclose(stopped_at, robot.poses.home_q, atol=JOINT_TOL)  # it really stopped short
    robot.clear_stop()
    robot.call("home")
    assert np.allclose(robot.call("state")["joints"], robot.poses.home_q, atol=JOINT_TOL)


def test_unreachable_robot_is_reported_not_hung():
    arm = RobotProcess(FrankaConfig(host="127.0.0.254"), ArmPoses(OBSERVATION_Q, READY_Q))
    with pytest.raises(RobotUnavailable, match="cannot connect"):
        arm.start()
    arm.close()


def test_a_call_that_times_out_stops_the_arm_and_the_next_call_is_answered_for_itself(robot):
    robot.call("home")
    with pytest.raises(RobotUnavailable, match="did not answer 'observe'"):
        robot.call("observe", timeout_s=0.3)  # the move takes seconds: its reply is late
    assert robot.stopping  # the timed-out motion was told to ramp down
    robot.clear_stop()  # as the daemon does before the next motion job
    state = robot.call("state")  # waits out the late 'observe' reply with the stop held, then asks
    assert set(state) == {"pose", "joints", "gripper_width"}  # this call's answer, not the late one
    assert not np.allclose(state["joints"], OBSERVATION_Q, atol=JOINT_TOL)  # observe was stopped short
    robot.call("ready")  # a motion's reply means the motion has ended
    assert np.allclose(robot.call("state")["joints"], READY_Q, atol=JOINT_TOL)
    assert not robot.stopping and robot.restarts == 0


def test_a_stop_while_a_late_reply_is_drained_is_kept_and_the_next_motion_refused(robot):
    """The operator stops the arm just while a timed-out call's late reply is drained: the stop must hold."""
    robot.call("home")
    with pytest.raises(RobotUnavailable, match="did not answer 'observe'"):
        robot.call("observe", timeout_s=0.3)
    robot.clear_stop()
    real = robot._result

    def draining(seq, timeout_s, what):
        if what.startswith("the stop of"):
            robot.stop()  # arrives during the drain, from the daemon's main thread in real life
        return real(seq, timeout_s, what)

    robot._result = draining
    try:
        with pytest.raises(MotionError, match="stopped: a stop came"):
            robot.call("ready")
    finally:
        robot._result = real
    assert robot.stopping  # still held: nothing clears it but the next job's clear_stop
    robot.clear_stop()
    robot.call("ready")
    assert np.allclose(robot.call("state")["joints"], READY_Q, atol=JOINT_TOL)


def test_a_held_stop_refuses_motions_and_hand_commands_before_they_start(robot):
    """With the stop held nothing starts: not the first 0.3 s of a ramp, not the hand, not a plan's first stage."""
    from appliance.geometry import SurfaceGrasp
    from appliance.robot.plan import plan_top_down

    robot.call("ready")
    before = robot.call("state")
    robot.stop()
    try:
        for command in ("home", "observe", "release"):
            with pytest.raises(MotionError, match="not started"):
                robot.call(command)
        target = SurfaceGrasp(np.array([0.5, 0.0, 0.02]), 0.0, np.array([0.5, 0.0, 0.8]), np.array([0, 0, -1.0]), 0.04)
        outcome = robot.call("execute", plan_top_down(target))
        assert (outcome.success, outcome.stage) == (False, "ready") and "not started" in outcome.message
        after = robot.call("state")
    finally:
        robot.clear_stop()
    assert np.abs(np.subtract(after["joints"], before["joints"])).max() < 1e-3  # not a hair
    assert abs(after["gripper_width"] - before["gripper_width"]) < 1e-3


def test_a_slowed_grasp_goes_to_its_ready_pose_slowly_too(robot):
    """At 5 % speed the ready move before the plan takes about 18 s from home (0.9 s at full speed): stopped after
    2.5 s, the grasp must still be in it."""
    from appliance.geometry import SurfaceGrasp
    from appliance.robot.plan import plan_top_down

    robot.call("home")
    target = SurfaceGrasp(np.array([0.5, 0.0, 0.02]), 0.0, np.array([0.5, 0.0, 0.8]), np.array([0, 0, -1.0]), 0.04)
    timer = threading.Timer(2.5, robot.stop)
    timer.start()
    try:
        outcome = robot.call("execute", plan_top_down(target).slowed(0.05), 0.05)
    finally:
        timer.cancel()
        robot.clear_stop()
    assert (outcome.success, outcome.stage) == (False, "ready") and "stopped" in outcome.message, outcome
