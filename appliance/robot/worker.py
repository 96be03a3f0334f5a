"""The arm in its own process: pylibfranka never releases the GIL while it talks to the robot.

The daemon calls ``RobotProcess.call("execute", plan)`` etc.; the child owns the
arm its config names (``appliance.robot.factory``) and answers over a pipe. ``stop()`` sets an event shared with the
child, which the arm's 1 kHz loop reads every cycle and ramps the motion down
— so a stop takes effect mid-motion, from any thread of the daemon, without
waiting for the pipe. A child that dies or hangs is a ``RobotUnavailable``,
never a hang of the daemon.

Calls and replies carry a sequence number, and a reply is only ever taken for
its own call. A call that times out stops the arm and leaves its reply
pending; before the next command the parent waits for that reply with the stop
held (the motion has then ended), or, if it does not come, restarts the child.
So a motion's reply always means that motion has ended, and no command can
read the answer to an earlier one.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass

from .base import RobotConfig
from .plan import GraspLimits, GraspPlan, GraspResult, MotionError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 30.0
RESYNC_TIMEOUT_S = 10.0
"""How long a timed-out motion may take to ramp down and answer before its process is restarted."""
HOME_Q = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
"""The FR3's usual ready pose."""


class RobotUnavailable(RuntimeError):
    """The arm process is gone, did not connect, or did not answer in time."""


class ArmTimeout(RobotUnavailable):
    """The arm process did not answer a call in time (the arm has been told to stop)."""


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


def _serve(config: RobotConfig, poses: ArmPoses, limits: GraspLimits, conn, stop, parent_pid: int) -> None:
    """The child: connect, then answer commands until told to quit or the pipe closes."""
    from .factory import make_arm
    from .plan import execute

    try:
        arm = make_arm(config, stop=StopOrOrphaned(stop, parent_pid)).connect()
    except Exception as exc:  # pylibfranka's connection errors: report and end
        conn.send((0, "error", "RobotUnavailable", f"cannot connect to the arm at {config.host}: {exc}"))
        return
    conn.send((0, "ok", None))

    def grasp(plan: GraspPlan, speed: float = 1.0):
        try:
            arm.move_joints(poses.ready_q, speed)
        except MotionError as exc:  # stopped or failed before the plan began: report it as the plan's first stage
            return GraspResult(False, "ready", str(exc))
        return execute(arm, plan)

    commands = {  # a joint motion's ``speed`` (0-1] scales the arm's joint speed, as a plan's does its own
        "observe": lambda speed=1.0: arm.move_joints(poses.observation_q, speed),
        "ready": lambda speed=1.0: arm.move_joints(poses.ready_q, speed),
        "home": lambda speed=1.0: arm.move_joints(poses.home_q, speed),
        "release": lambda: arm.open_gripper(limits.open_width),
        "execute": grasp,
        "recover": arm.recover,
        "state": lambda: {
            "pose": arm.pose().tolist(),
            "joints": arm.joints().tolist(),
            "gripper_width": arm.gripper_width(),
        },
    }
    while True:
        try:
            seq, name, args = conn.recv()
        except (EOFError, OSError):
            return
        if name == "quit":
            return
        try:
            reply = (seq, "ok", commands[name](*args))
        except MotionError as exc:
            reply = (seq, "error", "MotionError", str(exc))
        except Exception as exc:  # anything else is reported, and the process carries on
            log.exception("robot command %s failed", name)
            reply = (seq, "error", type(exc).__name__, str(exc))
        try:
            conn.send(reply)
        except OSError:  # the daemon is gone (the motion has ramped down already): end quietly
            return


class RobotProcess:
    """An arm (``appliance.robot.factory``) served by a child process."""

    def __init__(self, config: RobotConfig, poses: ArmPoses, limits: GraspLimits = GraspLimits()):
        self.config, self.poses, self.limits = config, poses, limits
        self._ctx = mp.get_context("spawn")  # no inherited threads, sockets or llama.cpp state
        self._stop = self._ctx.Event()
        self._seq = itertools.count(1)
        self._pending: int | None = None
        """The call whose reply is late (it timed out): drained before the next command."""
        self._stops = 0
        """Stop requests so far (``stop``): one that comes while a late reply is drained is not lost."""
        self.restarts = 0
        self._spawn()

    def _spawn(self) -> None:
        self._conn, child = self._ctx.Pipe()
        args = (self.config, self.poses, self.limits, child, self._stop, os.getpid())
        self._proc = self._ctx.Process(target=_serve, args=args, name="rtgrasp-robot", daemon=True)
        self._child_conn = child

    def start(self) -> RobotProcess:
        """Start the child and wait until it is connected to the arm."""
        self._proc.start()
        self._child_conn.close()
        self._result(0, CONNECT_TIMEOUT_S, "connect")
        return self

    def call(self, name: str, *args, timeout_s: float = 60.0):
        """Run one command in the child; ``MotionError`` / ``RobotUnavailable`` on failure."""
        if not self.alive:
            raise RobotUnavailable("the arm process is not running")
        if self._resync():
            raise MotionError(f"stopped: a stop came while the arm process was brought back in step; {name!r} not run")
        seq = next(self._seq)
        self._conn.send((seq, name, args))
        return self._result(seq, timeout_s, name)

    def _result(self, seq: int, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while True:
            if not self._conn.poll(max(0.0, deadline - time.monotonic())):
                self._stop.set()
                self._pending = seq
                raise ArmTimeout(f"the arm did not answer {what!r} within {timeout_s:.0f} s (stop requested)")
            try:
                got, status, *payload = self._conn.recv()
            except (EOFError, OSError) as exc:
                raise RobotUnavailable(f"the arm process ended during {what!r}") from exc
            if got == seq:
                break
            log.warning("dropped a late reply of the arm process (call %d, waiting for %d)", got, seq)
        if status == "ok":
            return payload[0]
        kind, message = payload
        if kind == "MotionError":
            raise MotionError(message)
        raise RobotUnavailable(f"{kind}: {message}")

    def _resync(self) -> bool:
        """After a timed-out call: hold the stop until its motion has ended and answered, or restart the child.
        Whether a stop was asked for meanwhile (it then stays set: the next motion must not start)."""
        if self._pending is None:
            return False
        pending, was_stopped, stops = self._pending, self._stop.is_set(), self._stops
        self._stop.set()
        try:
            self._result(pending, RESYNC_TIMEOUT_S, "the stop of a timed-out call")
            log.info("the arm process is in step again")
        except ArmTimeout:
            log.error("the arm process did not answer within %.0f s of a stop: restarting it", RESYNC_TIMEOUT_S)
            self._restart()
        except (MotionError, RobotUnavailable) as exc:  # its answer came (e.g. "stopped"), or the process ended
            if not self.alive:
                self._restart()
            else:
                log.info("the arm process is in step again (%s)", exc)
        finally:
            self._pending = None
            if not was_stopped and self._stops == stops:
                self._stop.clear()
        return self._stops != stops

    def _restart(self) -> None:
        self._proc.kill()
        self._proc.join(5)
        self._conn.close()
        self.restarts += 1
        self._spawn()
        self._pending = None
        self.start()

    def stop(self) -> None:
        """Ramp any motion down now (safe from any thread)."""
        self._stops += 1
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
        """Ramp any motion down, then ask the child to quit; terminate it if it does not."""
        self._stop.set()  # a motion still running (the daemon shutting down mid-grasp) ramps down, not cut off
        if self._proc.is_alive():
            try:
                self._conn.send((0, "quit", ()))
            except (OSError, ValueError):
                pass
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout_s)
        self._conn.close()
