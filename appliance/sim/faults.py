"""Faults the sim cell can inject, for the appliance's fault-injection tests.

franky-sim raises few reflexes by itself, so the cell's robot server can be
told to abort the running motion the way a real FR3 does after a collision:
the Move command ends with ``kReflexAborted``, the state reports
``robot_mode = kReflex`` with ``cartesian_reflex`` among the errors, and every
new motion is refused until the client runs ``automatic_error_recovery``.
pylibfranka therefore sees exactly what it would see from the real arm, and
the appliance's recovery path is tested against the protocol, not a mock.

The camera side (dropped or late frames) lives in the cell's service
(``appliance.sim.service``), which reads ``CameraFaults``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from franky_sim import franka_robot_server
from franky_sim.franka_robot_protocol import AutomaticErrorRecoveryCommand, MoveStatus, RobotCommand, RobotMode
from franky_sim.franka_robot_server import BaseCommand, FrankaRobotServer

CARTESIAN_REFLEX = 7
"""Index of ``cartesian_reflex`` in libfranka's error flags."""
ERROR_FLAGS = 41


class RecoveryCommand(AutomaticErrorRecoveryCommand):
    """``automatic_error_recovery`` that also clears an injected reflex."""

    def handle(self, server) -> None:
        clear = getattr(server, "clear_reflex", None)
        if clear is not None:
            clear()
        super().handle(server)


class FaultyRobotServer(FrankaRobotServer):
    """franky-sim's robot server, plus reflexes on demand."""

    def __init__(self, *args, **kwargs):
        self.reflex = False
        self._armed_after: float | None = None
        self._motion_started = 0.0
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)

    # -- called from the cell service's thread -------------------------------------------
    def inject_reflex(self, after_s: float) -> None:
        """Abort the next motion that has run for ``after_s`` seconds (the one running now, if any)."""
        with self._lock:
            self._armed_after = max(0.0, float(after_s))

    def clear_reflex(self) -> None:
        with self._lock:
            self.reflex = False

    # -- franky-sim's hooks (sim thread) ---------------------------------------------------
    def start_motion(self, *args, **kwargs):
        if self.reflex:  # MoveCommand.handle turns this into a refused Move, as the real arm refuses
            raise RuntimeError("robot is in reflex mode: automatic error recovery needed")
        self._motion_started = time.monotonic()
        return super().start_motion(*args, **kwargs)

    def _post_process_commands(self):
        with self._lock:
            due = (
                self._armed_after is not None
                and self.current_motion_id
                and time.monotonic() - self._motion_started >= self._armed_after
            )
            if due:
                self._armed_after = None
                self.reflex = True
        if due:
            motion = self.current_motion_id
            self.stop_motion(send_preemption_signal=False)
            self.reset_current_motion_id()
            BaseCommand.send_response(self._tcp_socket, RobotCommand.kMove, motion, MoveStatus.kReflexAborted)
        super()._post_process_commands()

    @property
    def robot_state(self):
        state = super().robot_state
        if not self.reflex:
            return state
        errors = tuple(i == CARTESIAN_REFLEX for i in range(ERROR_FLAGS))
        return state.replace(robot_mode=RobotMode.kReflex, current_errors=errors, last_motion_errors=errors)


def install() -> None:
    """Make franky-sim build our robot server (call before ``SimulationServer``)."""
    from franky_sim import simulation_server

    franka_robot_server.AutomaticErrorRecoveryCommand = RecoveryCommand
    simulation_server.FrankaRobotServer = FaultyRobotServer


@dataclass
class CameraFaults:
    """What the next ``count`` frame requests get: ``drop`` (an error reply) or ``stall`` (a reply after ``stall_s``)."""

    mode: str = "none"
    count: int = 0
    stall_s: float = 0.0

    MODES = ("none", "drop", "stall")

    def arm(self, mode: str, count: int = 1, stall_s: float = 3.0) -> None:
        if mode not in self.MODES:
            raise ValueError(f"camera fault must be one of {self.MODES}, got {mode!r}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"count must be a non-negative integer, got {count!r}")
        self.mode, self.count, self.stall_s = mode, count, float(stall_s)

    def take(self) -> str:
        """The fault for this frame request ('none' once the count is used up)."""
        if self.mode == "none" or self.count <= 0:
            return "none"
        self.count -= 1
        return self.mode
