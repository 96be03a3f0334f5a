"""The arm in its own process: pylibfranka never releases the GIL while it talks to the robot.

The daemon calls ``RobotProcess.call("execute", plan)`` etc.; the child owns a
``FrankaArm`` and answers over a pipe. ``stop()`` sets an event shared with the
child, which the arm's 1 kHz loop reads every cycle and ramps the motion down
— so a stop takes effect mid-motion, from any thread of the daemon, without
waiting for the pipe. A child that dies or hangs is a ``RobotUnavailable``,
never a hang of the daemon.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from dataclasses import dataclass

import numpy as np

from .franka import FrankaConfig
from .plan import GraspLimits, GraspPlan, GraspResult, MotionError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
HOME_Q = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
"""The FR3's usual ready pose."""


class RobotUnavailable(RuntimeError):
    """The arm process is gone, did not connect, or did not answer in time."""


@dataclass(frozen=True)
class ArmPoses:
    """Named joint configurations the daemon moves between."""

    observation_q: tuple[float, ...]
    """Arm out of the camera's view, for taking the picture."""
    ready_q: tuple[float, ...]
    """Above the table, where grasps start."""
    home_q: tuple[float, ...] = HOME_Q


class StopOrOrphaned:
    """The stop signal the 1 kHz loop reads: set by the daemon, or the daemon is gone.

    If the daemon dies (SIGKILL, OOM) mid-motion, nobody could stop the arm any
    more, so the motion ramps down as if a stop had arrived. ``getppid`` is one
    cheap system call, fine at 1 kHz.
    """

    def __init__(self, event, parent_pid: int):
        self.event, self.parent_pid = event, parent_pid

    def is_set(self) -> bool:
        return self.event.is_set() or os.getppid() != self.parent_pid


def _serve(config: FrankaConfig, poses: ArmPoses, limits: GraspLimits, conn, stop, parent_pid: int) -> None:
    """The child: connect, then answer commands until told to quit or the pipe closes."""
    from .franka import FrankaArm
    from .plan import execute

    try:
        arm = FrankaArm(config, stop=StopOrOrphaned(stop, parent_pid)).connect()
    except Exception as exc:  # pylibfranka's connection errors: report and end
        conn.send(("error", "RobotUnavailable", f"cannot connect to the arm at {config.host}: {exc}"))
        return
    conn.send(("ok", None))

    def grasp(plan: GraspPlan):
        try:
            arm.move_joints(poses.ready_q)
        except MotionError as exc:  # stopped or failed before the plan began: report it as the plan's first stage
            return GraspResult(False, "ready", str(exc))
        return execute(arm, plan)

    commands = {
        "observe": lambda: arm.move_joints(poses.observation_q),
        "ready": lambda: arm.move_joints(poses.ready_q),
        "home": lambda: arm.move_joints(poses.home_q),
        "release": lambda: arm.open_gripper(limits.open_width),
        "execute": grasp,
        "recover": arm.recover,
        "state": lambda: {"pose": arm.pose().tolist(), "joints": arm.joints().tolist(), "gripper_width": arm.gripper_width()},
    }
    while True:
        try:
            name, args = conn.recv()
        except (EOFError, OSError):
            return
        if name == "quit":
            return
        try:
            reply = ("ok", commands[name](*args))
        except MotionError as exc:
            reply = ("error", "MotionError", str(exc))
        except Exception as exc:  # anything else is reported, and the process carries on
            log.exception("robot command %s failed", name)
            reply = ("error", type(exc).__name__, str(exc))
        try:
            conn.send(reply)
        except OSError:  # the daemon is gone (the motion has ramped down already): end quietly
            return


class RobotProcess:
    """A ``FrankaArm`` served by a child process."""

    def __init__(self, config: FrankaConfig, poses: ArmPoses, limits: GraspLimits = GraspLimits()):
        self.config, self.poses, self.limits = config, poses, limits
        ctx = mp.get_context("spawn")  # no inherited threads, sockets or llama.cpp state
        self._stop = ctx.Event()
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(config, poses, limits, child, self._stop, os.getpid()), name="rtgrasp-robot", daemon=True)
        self._child_conn = child

    def start(self) -> RobotProcess:
        """Start the child and wait until it is connected to the arm."""
        self._proc.start()
        self._child_conn.close()
        self._result(CONNECT_TIMEOUT_S, "connect")
        return self

    def call(self, name: str, *args, timeout_s: float = 60.0):
        """Run one command in the child; ``MotionError`` / ``RobotUnavailable`` on failure."""
        if not self.alive:
            raise RobotUnavailable("the arm process is not running")
        self._conn.send((name, args))
        return self._result(timeout_s, name)

    def _result(self, timeout_s: float, what: str):
        if not self._conn.poll(timeout_s):
            self._stop.set()
            raise RobotUnavailable(f"the arm did not answer {what!r} within {timeout_s:.0f} s (stop requested)")
        try:
            status, *payload = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise RobotUnavailable(f"the arm process ended during {what!r}") from exc
        if status == "ok":
            return payload[0]
        kind, message = payload
        if kind == "MotionError":
            raise MotionError(message)
        raise RobotUnavailable(f"{kind}: {message}")

    def stop(self) -> None:
        """Ramp any motion down now (safe from any thread)."""
        self._stop.set()

    def clear_stop(self) -> None:
        """Allow motions again (the daemon does this when a new motion job starts)."""
        self._stop.clear()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def alive(self) -> bool:
        return self._proc.is_alive()

    def close(self, timeout_s: float = 5.0) -> None:
        """Ask the child to quit; terminate it if it does not."""
        if self._proc.is_alive():
            try:
                self._conn.send(("quit", ()))
            except (OSError, ValueError):
                pass
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout_s)
        self._conn.close()


def as_plain(result) -> dict:
    """A GraspResult (or anything dataclass-like) as JSON-ready values."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(result):
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(result).items()}
    return result
