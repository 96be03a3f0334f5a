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


def test_the_reply_box_is_the_object_the_answer_named_where_the_depth_boxes_another():
    from appliance.daemon.jobs import in_camera, reply_box
    from appliance.runtime.preprocess import CropBox

    crop = CropBox(160.0, 80.0, 320.0)  # the 320-pixel workspace crop of a 640 x 480 camera
    knife = in_camera((0.25, 0.5, 0.5, 0.5625), crop, (480, 640))
    assert knife == [240, 240, 320, 260]
    ball = [330, 230, 380, 280]  # the depth's object a finger's reach from the grasp centre on the blade
    assert reply_box(ball, knife) == knife
    assert reply_box(None, knife) == knife  # the depth sees nothing there
    handle = [236, 238, 300, 262]  # the depth's box holds the middle of the view's: the same object, exact
    assert reply_box(handle, knife) == handle
    assert reply_box(ball, None) == ball  # no target check: the depth's box as before
    both = [236, 238, 380, 282]  # the knife's handle touching the ball: one region of the depth's
    assert reply_box(both, knife) == knife
    assert in_camera((-0.6, 0.0, -0.55, 0.1), crop, (480, 640)) is None  # left of the image altogether
    assert in_camera((0.9, 0.9, 1.0, 1.0), CropBox(-20.0, 0.0, 500.0), (480, 640)) == [430, 450, 480, 480]  # clipped


def test_the_daemon_replies_with_the_view_box_where_the_depth_boxes_another_object():
    """``Jobs._box`` with a real depth image: a ball standing 6 cm off the table a finger's reach from the grasp
    centre, on a knife the depth cannot see (its blade is no height); the prediction's box is the knife's."""
    from types import SimpleNamespace

    import numpy as np

    from appliance.camera.base import Frame
    from appliance.daemon.jobs import Jobs
    from appliance.geometry import Intrinsics
    from appliance.runtime.preprocess import CropBox

    depth = np.full((480, 640), 0.7, np.float32)
    depth[230:280, 330:380] -= 0.06  # the ball
    frame = Frame(np.zeros((480, 640, 3), np.uint8), depth, Intrinsics(600.0, 600.0, 320.0, 240.0, 640, 480))
    jobs = Jobs.__new__(Jobs)
    jobs.config = SimpleNamespace(depth_window=5)
    knife = SimpleNamespace(box=(0.25, 0.5, 0.5, 0.5625), crop=CropBox(160.0, 80.0, 320.0))
    assert jobs._box(frame, 310.0, 250.0, SimpleNamespace(box=None, crop=knife.crop)) == [330, 230, 380, 280]
    assert jobs._box(frame, 310.0, 250.0, knife) == [240, 240, 320, 260]
    ball = SimpleNamespace(box=(0.53125, 0.46875, 0.6875, 0.625), crop=knife.crop)  # the view's box of the ball
    assert jobs._box(frame, 350.0, 250.0, ball) == [330, 230, 380, 280]  # the same object: the depth's, exact
    frame.depth[:] = np.nan  # no depth at all: the view's box
    assert jobs._box(frame, 310.0, 250.0, knife) == [240, 240, 320, 260]
    assert jobs._box(frame, 310.0, 250.0, SimpleNamespace(box=None, crop=knife.crop)) is None
