"""Franka FR3 backend through pylibfranka (real robot, or franky-sim on loopback).

pylibfranka never releases the GIL while it talks to the robot, so this
backend belongs in its own process. Motions are streamed at 1 kHz from
minimum-jerk profiles; a stop request ramps the motion down instead of
cutting it; after every Cartesian motion the reached pose is checked, since
an unreachable target must not pass silently.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from appliance.geometry import interpolate_pose, rotation_log

from .base import Arm
from .plan import MotionError

log = logging.getLogger(__name__)

STOP_RAMP_S = 0.3  # a stop request slows the motion to rest over this long
STOP_WALL_S = 1.0
"""A stop's ramp runs on the robot's clock (``dt``); should that clock stall, the motion still ends this long after the
stop, on the wall clock, holding the pose it last commanded."""
MIN_DURATION_S = 0.4
REACH_TOLERANCE_M = 0.01
REACH_TOLERANCE_RAD = math.radians(5)
MAX_COLLISION_TORQUE = (87.0, 87.0, 87.0, 87.0, 24.0, 24.0, 24.0)
"""The highest collision threshold a config may set per joint (Nm): the FR3's rated torque for joints 1-4, twice
the wrist's rated 12 Nm for 5-7 (libfranka's own examples set 16, 14, 12). A typo's 1000 would switch the reflex
off next to people."""
MAX_COLLISION_FORCE = (100.0, 100.0, 100.0, 30.0, 30.0, 30.0)
"""The same per Cartesian axis: N along x, y, z; Nm about them."""


@dataclass(frozen=True)
class FrankaConfig:
    """How to reach and drive the arm."""

    type: str = "franka"
    host: str = "127.0.0.1"
    realtime: bool = False
    """Enforce realtime scheduling (needs a PREEMPT_RT kernel); off for the simulator."""
    joint_speed: float = 1.2  # rad/s, fastest joint during joint motions
    angular_speed: float = 1.5  # rad/s during Cartesian motions
    gripper_speed: float = 0.05  # m/s
    collision_torque: tuple[float, float, float, float, float, float, float] = (
        20.0,
        20.0,
        18.0,
        18.0,
        16.0,
        14.0,
        12.0,
    )
    collision_force: tuple[float, float, float, float, float, float] = (20.0, 20.0, 20.0, 25.0, 25.0, 25.0)
    payload_mass: float = 0.0
    """kg held beyond the Franka Hand (whose own load is set in Desk); 0: none."""
    payload_com: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Centre of mass of the payload in the flange frame (m)."""
    payload_inertia: tuple[float, float, float, float, float, float, float, float, float] = (
        1e-3,
        0,
        0,
        0,
        1e-3,
        0,
        0,
        0,
        1e-3,
    )

    def __post_init__(self) -> None:
        if self.type != "franka":
            raise ValueError(f"FrankaConfig is for type 'franka', got {self.type!r}")
        if not 0 < self.joint_speed <= 2.0 or not 0 < self.angular_speed <= 2.5:
            raise ValueError("joint_speed must be in (0, 2] rad/s and angular_speed in (0, 2.5] rad/s")
        if not 0 <= self.payload_mass <= 3.0:
            raise ValueError("payload_mass must be in [0, 3] kg (the FR3's payload)")
        if not 0 < self.gripper_speed <= 0.1:
            raise ValueError("gripper_speed must be in (0, 0.1] m/s")
        for name, caps, unit in (
            ("collision_torque", MAX_COLLISION_TORQUE, "Nm"),
            ("collision_force", MAX_COLLISION_FORCE, "N"),
        ):
            values = getattr(self, name)
            if len(values) != len(caps) or not all(math.isfinite(v) and 0 < v <= c for v, c in zip(values, caps)):
                raise ValueError(
                    f"{name} must be {len(caps)} thresholds in (0, cap] {unit}, caps {list(caps)} (a higher one is "
                    f"a reflex that never fires), got {list(values)}"
                )


def min_jerk(tau: float) -> float:
    """Minimum-jerk profile: 0 → 1 with zero velocity and acceleration at both ends."""
    tau = min(max(tau, 0.0), 1.0)
    return tau**3 * (10 - 15 * tau + 6 * tau**2)


def column_major(T: np.ndarray) -> list[float]:
    return T.flatten(order="F").tolist()


def from_column_major(values) -> np.ndarray:
    """libfranka's column-major O_T_EE read into a row-major 4×4 (DESIGN.md, robot frames)."""
    return np.array(values, dtype=np.float64).reshape(4, 4, order="F")


class FrankaArm(Arm):
    """One FR3 with its Franka Hand."""

    def __init__(self, config: FrankaConfig = FrankaConfig(), stop: threading.Event | None = None):
        self.config = config
        self.stop_requested = stop or threading.Event()
        self._robot = self._gripper = None

    # ---------------------------------------------------------------- connection
    def connect(self) -> FrankaArm:
        import pylibfranka as pf

        self._pf = pf
        rt = pf.RealtimeConfig.kEnforce if self.config.realtime else pf.RealtimeConfig.kIgnore
        self._robot = pf.Robot(self.config.host, rt)
        self._gripper = pf.Gripper(self.config.host)
        c = self.config
        self._robot.set_collision_behavior(
            list(c.collision_torque), list(c.collision_torque), list(c.collision_force), list(c.collision_force)
        )
        if c.payload_mass > 0:
            self._robot.set_load(c.payload_mass, list(c.payload_com), list(c.payload_inertia))
        log.info("connected to the arm at %s", c.host)
        return self

    def disconnect(self) -> None:
        self._robot = self._gripper = None

    @property
    def is_connected(self) -> bool:
        return self._robot is not None

    # ---------------------------------------------------------------- state
    def pose(self) -> np.ndarray:
        """Current TCP pose O_T_EE (row-major 4×4, base frame)."""
        return from_column_major(self._robot.read_once().O_T_EE)

    def joints(self) -> np.ndarray:
        return np.array(self._robot.read_once().q)

    def recover(self) -> None:
        """Clear a reflex or error so the arm accepts motions again."""
        self._robot.automatic_error_recovery()

    # ---------------------------------------------------------------- motions
    def move_joints(self, target_q, speed_factor: float = 1.0) -> None:
        """Joint-space minimum-jerk motion to ``target_q``."""
        pf, target = self._pf, np.asarray(target_q, dtype=np.float64)

        def start(state):
            q0 = np.array(state.q_d)
            duration = max(
                MIN_DURATION_S, 1.875 * np.max(np.abs(target - q0)) / (self.config.joint_speed * speed_factor)
            )
            return duration, lambda s: pf.JointPositions((q0 + s * (target - q0)).tolist())

        self._stream(lambda: self._robot.start_joint_position_control(pf.ControllerMode.JointImpedance), start)

    def move_pose(self, target: np.ndarray, speed: float) -> None:
        """Straight-line Cartesian minimum-jerk motion of the TCP; raises if the target was not reached."""
        pf = self._pf

        def start(state):
            T0 = from_column_major(state.O_T_EE_c)
            distance = float(np.linalg.norm(target[:3, 3] - T0[:3, 3]))
            turn = float(np.linalg.norm(rotation_log(T0[:3, :3].T @ target[:3, :3])))
            # peak speed of a minimum-jerk profile is 1.875 × the mean speed
            duration = max(MIN_DURATION_S, 1.875 * distance / speed, 1.875 * turn / self.config.angular_speed)
            return duration, lambda s: pf.CartesianPose(column_major(interpolate_pose(T0, target, s)))

        self._stream(lambda: self._robot.start_cartesian_pose_control(pf.ControllerMode.JointImpedance), start)
        self._check_reached(target)

    def _refuse_if_stopped(self, what: str) -> None:
        """``MotionError`` before ``what`` begins when a stop is held: a stopped arm starts nothing, not even the
        first 0.3 s of a ramp."""
        if self.stop_requested.is_set():
            raise MotionError(f"stopped on request: {what} not started")

    def _stream(self, start_control, start) -> None:
        """Run one 1 kHz control loop; a stop request ramps the profile's clock down to rest."""
        pf = self._pf
        self._refuse_if_stopped("the motion")
        try:
            control = start_control()
            state, _ = control.readOnce()
            duration, command_at = start(state)
            tau, rate, stop_seen = 0.0, 1.0, None
            while True:
                state, dt = control.readOnce()
                step = dt.to_sec()
                if self.stop_requested.is_set():
                    rate = max(0.0, rate - step / STOP_RAMP_S)
                    stop_seen = time.monotonic() if stop_seen is None else stop_seen
                    if time.monotonic() - stop_seen > STOP_WALL_S:  # the robot's clock stalled: end it where it is
                        rate = 0.0
                tau = min(1.0, tau + step / duration * rate)
                command = command_at(min_jerk(tau))
                finished = tau >= 1.0 or rate == 0.0
                command.motion_finished = finished
                control.writeOnce(command)
                if finished:
                    break
        except (pf.ControlException, pf.CommandException, pf.NetworkException) as exc:
            log.warning("motion failed: %s; recovering", exc)
            self._recover_quietly()
            raise MotionError(f"motion failed: {exc}") from exc
        if self.stop_requested.is_set():
            raise MotionError("stopped on request")

    def _recover_quietly(self) -> None:
        try:
            self.recover()
        except Exception as exc:  # recovery itself failing is reported by the next motion
            log.error("automatic error recovery failed: %s", exc)

    def _check_reached(self, target: np.ndarray) -> None:
        reached = self.pose()
        error = float(np.linalg.norm(reached[:3, 3] - target[:3, 3]))
        turn = float(np.linalg.norm(rotation_log(reached[:3, :3].T @ target[:3, :3])))
        if error > REACH_TOLERANCE_M or turn > REACH_TOLERANCE_RAD:
            raise MotionError(
                f"target not reached: {error * 1000:.0f} mm and {math.degrees(turn):.1f}° away "
                f"(at {np.round(reached[:3, 3], 3).tolist()}, wanted {np.round(target[:3, 3], 3).tolist()})"
            )

    # ---------------------------------------------------------------- gripper
    # A hand command blocks in pylibfranka, GIL held, until the fingers stop (at most 80 mm at gripper_speed,
    # 1.6 s at the default): a stop cannot cut it short from this process. It is refused when a stop is held,
    # and a stop that came while it ran ends the plan there (``execute`` starts no further stage).
    def open_gripper(self, width: float) -> None:
        if not self._hand("opening the hand", lambda g: g.move(width, self.config.gripper_speed)):
            raise MotionError(f"the hand did not open to {width * 1000:.0f} mm")

    def grasp(self, width: float, force: float, epsilon_inner: float, epsilon_outer: float) -> bool:
        """Close with ``force``; True if the final width is within [width − ε_inner, width + ε_outer]."""
        speed = self.config.gripper_speed
        return bool(
            self._hand("closing the hand", lambda g: g.grasp(width, speed, force, epsilon_inner, epsilon_outer))
        )

    def _hand(self, what: str, command):
        self._refuse_if_stopped(what)
        try:
            done = command(self._gripper)
        except (self._pf.CommandException, self._pf.NetworkException) as exc:
            raise MotionError(f"the hand failed: {exc}") from exc
        if self.stop_requested.is_set():
            raise MotionError(f"stopped on request while {what}")
        return done

    def gripper_width(self) -> float:
        return float(self._gripper.read_once().width)

    def is_grasped(self) -> bool:
        return bool(self._gripper.read_once().is_grasped)
