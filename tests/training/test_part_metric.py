import math

import numpy as np
import pytest

from appliance.grasp import GraspPose
from training.datasets.referring import SceneTruth
from training.part_metric import CENTRE_TOLERANCE, score_part

SIZE = (200, 100)
MPP = 0.001  # 1 mm per pixel: 1 cm is 10 pixels


def bar_scene(neighbour_at: int | None = None) -> SceneTruth:
    """A spatula along x: handle pixels 40..100 (10 px wide), blade 100..160 (24 px wide), at row 50; its handle
    may be grasped across (closing along image y) between x = 50 and 90. Optionally a second object at column
    neighbour_at."""
    mask = np.zeros((SIZE[1], SIZE[0]), dtype=np.uint8)
    mask[45:55, 40:100] = 1  # (0, handle)
    mask[38:62, 100:160] = 2  # (0, blade)
    segments = [(0, "handle"), (0, "blade")]
    objects = [
        {
            "category": "knife",
            "regions": [
                {
                    "part": "handle",
                    "allowed": True,
                    "start": [50, 50],
                    "end": [90, 50],
                    "angle": math.pi / 2,
                    "opening": 25.0,
                    "mpp": MPP,
                },
                {
                    "part": "blade",
                    "allowed": False,
                    "start": [130, 50],
                    "end": [130, 50],
                    "angle": math.pi / 2,
                    "opening": 20.0,
                    "mpp": MPP,
                },
            ],
        }
    ]
    if neighbour_at is not None:
        mask[60:80, neighbour_at : neighbour_at + 20] = 3
        segments.append((1, "body"))
        objects.append({"category": "can", "regions": []})
    return SceneTruth(tuple(objects), (), tuple(segments), mask)


def pose(u, v, theta=math.pi / 2):
    return GraspPose(u / SIZE[0], v / SIZE[1], theta)


def test_a_grasp_across_the_handle_is_right():
    score = score_part(pose(70, 50), bar_scene(), 0, SIZE)
    assert score.correct and score.on_target


def test_the_centre_must_lie_within_a_centimetre_of_an_allowed_region():
    assert score_part(pose(70, 50 + 0.8 * CENTRE_TOLERANCE / MPP), bar_scene(), 0, SIZE).correct
    far = score_part(pose(70, 50 + 1.5 * CENTRE_TOLERANCE / MPP), bar_scene(), 0, SIZE)
    assert not far.correct and far.reason == "centre off every allowed region"
    blade = score_part(pose(130, 50), bar_scene(), 0, SIZE)  # on the knife, but on its blade
    assert not blade.correct and blade.on_target


def test_the_closing_axis_must_be_allowed_there():
    assert score_part(pose(70, 50, math.pi / 2 + math.radians(25)), bar_scene(), 0, SIZE).correct
    along = score_part(pose(70, 50, math.radians(5)), bar_scene(), 0, SIZE)
    assert not along.correct and along.reason == "closing axis not allowed there"


def test_a_finger_pad_must_not_land_on_the_blade_or_another_object():
    assert score_part(pose(88, 50), bar_scene(), 0, SIZE).correct  # pads reach 10 px along x: not yet the blade
    near_blade = score_part(pose(95, 50), bar_scene(), 0, SIZE)  # 5 mm past the region's end: pads on the blade
    assert not near_blade.correct and near_blade.reason == "a finger pad on the blade"
    crowded = score_part(pose(70, 50), bar_scene(neighbour_at=65), 0, SIZE)  # a can right below the handle
    assert not crowded.correct and crowded.reason == "a finger pad on another object"
    assert score_part(pose(70, 50), bar_scene(neighbour_at=170), 0, SIZE).correct  # a can far away


def test_the_target_rate_reads_the_mask():
    scene = bar_scene(neighbour_at=65)
    on_can = score_part(pose(70, 70), scene, 0, SIZE)
    assert not on_can.on_target and not on_can.correct
    assert score_part(pose(70, 70), scene, 1, SIZE).on_target
    with pytest.raises(ValueError, match="target 2"):
        score_part(pose(70, 50), scene, 2, SIZE)
