"""When a session's picture must be checked against a new one before a grasp is planned on it."""

from appliance.daemon.jobs import stale


def test_a_picture_is_rechecked_after_any_motion_and_when_old():
    taken = 100.0  # time.monotonic() when it was taken
    assert stale(taken, 3, 3, max_age_s=10, now=109.0) == ""
    assert "the arm has moved" in stale(taken, 3, 4, max_age_s=10, now=101.0)
    assert "11 s old" in stale(taken, 3, 3, max_age_s=10, now=111.0)
    assert "older than 0 s" in stale(taken, 3, 3, max_age_s=0, now=100.5)  # 0: every time
