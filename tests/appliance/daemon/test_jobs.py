"""When a session's picture must be checked against a new one before a grasp is planned on it."""

import numpy as np

from appliance.camera.base import Frame, Intrinsics
from appliance.daemon.jobs import stale


def _frame(timestamp: float) -> Frame:
    intrinsics = Intrinsics(fx=500.0, fy=500.0, cx=4.0, cy=3.0, width=8, height=6)
    return Frame(np.zeros((6, 8, 3), np.uint8), np.ones((6, 8), np.float32), intrinsics, timestamp)


def test_a_picture_is_rechecked_after_any_motion_and_when_old():
    frame = _frame(100.0)
    assert stale(frame, 3, 3, max_age_s=10, now=109.0) == ""
    assert "the arm has moved" in stale(frame, 3, 4, max_age_s=10, now=101.0)
    assert "11 s old" in stale(frame, 3, 3, max_age_s=10, now=111.0)
    assert "older than 0 s" in stale(frame, 3, 3, max_age_s=0, now=100.5)  # 0: every time
