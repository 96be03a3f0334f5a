"""The 1 kHz loop of ``FrankaArm._stream`` where franky-sim cannot go: a robot whose clock stops advancing.

The simulator always advances ``dt``; a real controller that stalls (or a simulator starved of CPU) may not. The
stop's ramp runs on that clock, so the loop also ends on the wall clock. Only the control object is stood in for:
everything above it is the backend's own code."""

import threading
import time
from types import SimpleNamespace

import pytest

from appliance.robot.franka import STOP_WALL_S, FrankaArm
from appliance.robot.plan import MotionError


class StalledControl:
    """A control loop whose every read says no time has passed; the stop comes on the fifth read."""

    def __init__(self, stop: threading.Event):
        self.stop, self.reads, self.written = stop, 0, []

    def readOnce(self):
        self.reads += 1
        if self.reads == 5:
            self.stop.set()
        time.sleep(0.001)
        return None, SimpleNamespace(to_sec=lambda: 0.0)

    def writeOnce(self, command):
        self.written.append(command)


def test_a_stop_ends_the_motion_even_when_the_robots_clock_stalls():
    arm = FrankaArm()
    arm._pf = SimpleNamespace(ControlException=OSError, CommandException=OSError, NetworkException=OSError)
    control = StalledControl(arm.stop_requested)
    outcome = {}

    def run():
        try:
            arm._stream(lambda: control, lambda state: (2.0, lambda s: SimpleNamespace(at=s, motion_finished=False)))
        except MotionError as exc:
            outcome["error"] = str(exc)

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(STOP_WALL_S + 3)
    assert not thread.is_alive(), "the loop kept running after the stop"
    assert outcome["error"] == "stopped on request"
    assert time.monotonic() - start == pytest.approx(STOP_WALL_S, abs=1.0)
    last = control.written[-1]
    assert last.motion_finished and last.at == 0.0  # held where it was: the profile never advanced
