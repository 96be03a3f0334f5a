"""When a session's picture must be checked against a new one before a grasp is planned on it."""

from appliance.daemon.jobs import stale


def test_a_picture_is_rechecked_after_any_motion_and_when_old():
    taken = 100.0  # time.monotonic() when it was taken
    assert stale(taken, 3, 3, max_age_s=10, now=109.0) == ""
    assert "the arm has moved" in stale(taken, 3, 4, max_age_s=10, now=101.0)
    assert "11 s old" in stale(taken, 3, 3, max_age_s=10, now=111.0)
    assert "older than 0 s" in stale(taken, 3, 3, max_age_s=0, now=100.5)  # 0: every time


def test_a_follow_up_that_names_no_object_is_about_the_one_the_conversation_last_named():
    from types import SimpleNamespace

    from appliance.daemon.jobs import held_category
    from appliance.runtime.objects import CategoryNames

    names = CategoryNames({"knife": "knife", "mug": "mug", "coffee mug": "mug"})
    turns = [
        SimpleNamespace(reasoning=r) for r in ("It is a knife, a long thin blade.", "Switching to the coffee mug.")
    ]
    rotated = SimpleNamespace(reasoning="Rotating the gripper by 90 degrees: -0.22 to 1.35.")
    assert held_category(names, [*turns, rotated]) == "mug"
    assert held_category(names, turns[:1] + [rotated]) == "knife"
    assert held_category(names, [rotated]) is None
    assert held_category(names, [SimpleNamespace(reasoning=None), rotated]) is None  # an NR answer has none
