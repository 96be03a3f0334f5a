"""The grasp conventions of DESIGN.md, pinned."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.grasp import (
    MAX_ANGLE_ERROR,
    GraspPose,
    GraspRectangle,
    angle_difference,
    is_correct,
    score_pose,
    wrap_angle,
)

# The Cornell rectangle 253 319.7 / 309 324 / 307 350 / 251 345.7, read as
# GR-ConvNet reads it (corners rounded to whole pixels).
CORNELL = GraspRectangle([[253, 320], [309, 324], [307, 350], [251, 346]])

finite = dict(allow_nan=False, allow_infinity=False)
angles = st.floats(-10.0, 10.0, **finite)
coords = st.floats(0.0, 1000.0, **finite)
sizes = st.floats(2.0, 200.0, **finite)


def test_cornell_rectangle_is_pinned():
    cx, cy = CORNELL.center
    assert cx == pytest.approx(280.0, abs=0.5)
    assert cy == pytest.approx(335.0, abs=0.5)
    assert math.degrees(CORNELL.angle) == pytest.approx(-4.09, abs=0.01)
    assert CORNELL.length == pytest.approx(56.1, abs=0.05)
    assert CORNELL.width == pytest.approx(26.1, abs=0.05)


def test_angle_is_counter_clockwise_as_displayed():
    right = GraspRectangle([[0, 0], [10, 0], [10, 5], [0, 5]])
    up_on_screen = GraspRectangle([[0, 10], [0, 0], [5, 0], [5, 10]])  # p0→p1 has dy < 0
    down_right = GraspRectangle([[0, 0], [10, 10], [5, 15], [-5, 5]])
    assert right.angle == pytest.approx(0.0)
    assert up_on_screen.angle == pytest.approx(-math.pi / 2)  # +π/2 wraps to −π/2
    assert down_right.angle == pytest.approx(-math.pi / 4)


def test_rectangle_rejects_bad_points():
    with pytest.raises(ValueError, match="4"):
        GraspRectangle([[0, 0], [1, 0], [1, 1]])
    with pytest.raises(ValueError, match="non-finite"):
        GraspRectangle([[0, 0], [1, 0], [1, float("nan")], [0, 1]])


@given(angles)
def test_wrap_angle_range_and_grasp_symmetry(theta):
    w = wrap_angle(theta)
    assert -math.pi / 2 <= w < math.pi / 2
    assert angle_difference(theta, theta + math.pi) == pytest.approx(0.0, abs=1e-9)
    assert angle_difference(theta, theta - math.pi) == pytest.approx(0.0, abs=1e-9)


@given(angles, angles)
def test_angle_difference_is_symmetric_and_bounded(a, b):
    d = angle_difference(a, b)
    assert 0.0 <= d <= math.pi / 2 + 1e-12
    assert d == pytest.approx(angle_difference(b, a), abs=1e-9)


@given(coords, coords, angles, sizes, sizes)
def test_from_center_round_trip(cx, cy, theta, length, width):
    rect = GraspRectangle.from_center(cx, cy, theta, length, width)
    assert rect.center == pytest.approx((cx, cy), abs=1e-6)
    assert angle_difference(rect.angle, theta) == pytest.approx(0.0, abs=1e-9)
    assert rect.length == pytest.approx(length, rel=1e-9)
    assert rect.width == pytest.approx(width, rel=1e-9)
    assert rect.area == pytest.approx(length * width, rel=1e-9)


@given(coords, coords, angles, sizes, sizes)
def test_theta_and_theta_plus_pi_are_the_same_grasp(cx, cy, theta, length, width):
    a = GraspRectangle.from_center(cx, cy, theta, length, width)
    b = GraspRectangle.from_center(cx, cy, theta + math.pi, length, width)
    assert a.iou(b) == pytest.approx(1.0, abs=1e-9)
    assert a.angle == pytest.approx(b.angle, abs=1e-9) or abs(abs(a.angle - b.angle) - math.pi) < 1e-9


@given(
    st.floats(0, 1, **finite), st.floats(0, 1, **finite), angles, st.sampled_from([(640, 480), (224, 224), (1024, 768)])
)
def test_pose_rectangle_round_trip(x, y, theta, size):
    pose = GraspPose(x, y, theta)
    rect = pose.to_rectangle(size, 50.0, 20.0)
    back = GraspPose.from_rectangle(rect, size)
    assert (back.x, back.y) == pytest.approx((x, y), abs=1e-9)
    assert angle_difference(back.theta, theta) == pytest.approx(0.0, abs=1e-9)


def test_iou_exact_values():
    a = GraspRectangle([[0, 0], [2, 0], [2, 1], [0, 1]])
    shifted = GraspRectangle([[1, 0], [3, 0], [3, 1], [1, 1]])
    far = GraspRectangle([[10, 10], [12, 10], [12, 11], [10, 11]])
    assert a.iou(a) == pytest.approx(1.0)
    assert a.iou(shifted) == pytest.approx(1 / 3)
    assert a.iou(far) == 0.0
    square = GraspRectangle.from_center(0, 0, 0, 2, 2)
    diamond = GraspRectangle.from_center(0, 0, math.pi / 4, 2, 2)
    octagon = 8 * (math.sqrt(2) - 1)
    assert square.iou(diamond) == pytest.approx(octagon / (8 - octagon), rel=1e-12)


def test_iou_is_independent_of_vertex_order():
    reversed_order = GraspRectangle(CORNELL.points[::-1])
    other = GraspRectangle.from_center(290, 330, 0.3, 60, 20)
    assert CORNELL.iou(other) == pytest.approx(reversed_order.iou(other), abs=1e-12)


# Centres close together so that most pairs overlap.
near = st.floats(0.0, 60.0, **finite)
rectangles = st.builds(GraspRectangle.from_center, near, near, angles, sizes, sizes)


@given(rectangles, rectangles)
def test_iou_symmetric_and_bounded(a, b):
    iou = a.iou(b)
    assert 0.0 <= iou <= 1.0 + 1e-9
    assert iou == pytest.approx(b.iou(a), abs=1e-9)


def test_iou_matches_rasterised_estimate():
    a = GraspRectangle.from_center(50, 50, 0.4, 60, 25)
    b = GraspRectangle.from_center(60, 55, -0.3, 50, 30)
    ys, xs = np.mgrid[0:100:0.1, 0:100:0.1] + 0.05
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)

    def inside(rect):
        p, ok = rect.points, np.ones(len(pts), bool)
        for i in range(4):
            e, d = p[(i + 1) % 4] - p[i], pts - p[i]
            ok &= (e[0] * d[:, 1] - e[1] * d[:, 0]) >= 0
        return ok

    ia, ib = inside(a), inside(b)
    assert a.iou(b) == pytest.approx((ia & ib).sum() / (ia | ib).sum(), abs=2e-3)


SIZE = (640, 480)
TRUTH = GraspRectangle.from_center(320, 240, 0.2, 60, 20)


def pose_at(dx=0.0, dtheta=0.0):
    return GraspPose((320 + dx) / SIZE[0], 240 / SIZE[1], 0.2 + dtheta)


def test_correct_within_thirty_degrees_only():
    assert is_correct(pose_at(dtheta=math.radians(29)), [TRUTH], SIZE)
    assert not is_correct(pose_at(dtheta=math.radians(31)), [TRUTH], SIZE)
    assert is_correct(pose_at(dtheta=math.pi), [TRUTH], SIZE)
    assert is_correct(pose_at(dtheta=math.pi - math.radians(29)), [TRUTH], SIZE)
    assert MAX_ANGLE_ERROR == pytest.approx(math.radians(30))


def test_correct_needs_iou_above_quarter():
    # Along the 60 px closing axis a shift s leaves IoU (60 - s) / (60 + s): 0.25 at s = 36.
    axis = np.array([math.cos(0.2), -math.sin(0.2)])
    near = GraspPose(*((np.array([320, 240]) + 35 * axis) / SIZE), 0.2)
    far = GraspPose(*((np.array([320, 240]) + 37 * axis) / SIZE), 0.2)
    assert score_pose(near, [TRUTH], SIZE).correct
    assert not score_pose(far, [TRUTH], SIZE).correct


def test_prediction_takes_each_truths_size_and_any_truth_counts():
    other = GraspRectangle.from_center(100, 100, -1.0, 30, 10)
    pose = GraspPose(100 / 640, 100 / 480, -1.0)
    score = score_pose(pose, [TRUTH, other], SIZE)
    assert score.correct and score.best_iou == pytest.approx(1.0)
    assert not score_pose(pose, [], SIZE).correct


def test_rectangle_is_immutable_and_hashable():
    with pytest.raises(ValueError):
        CORNELL.points[0, 0] = 1.0
    assert {CORNELL, GraspRectangle(CORNELL.points.copy())} == {CORNELL}


def _score_every_truth(pose: GraspPose, truths: list[GraspRectangle], size) -> tuple[bool, float, float]:
    """The rectangle metric by its definition: every truth's angle, every truth's overlap."""
    best_iou, best_angle = 0.0, math.pi / 2
    for truth in truths:
        error = angle_difference(pose.theta, truth.angle)
        best_angle = min(best_angle, error)
        if error <= MAX_ANGLE_ERROR:
            best_iou = max(best_iou, pose.to_rectangle(size, truth.length, truth.width).iou(truth))
    return best_iou > 0.25, best_iou, best_angle


@given(st.integers(0, 2**32 - 1))
def test_scoring_only_near_truths_changes_nothing(seed):
    # score_pose skips the overlap of truths too far away to touch the pose's rectangle; on dense label sets
    # (hundreds of grasps, some not quite rectangles, poses at and across the angle limit) the score is the
    # definition's, to the last bit
    rng = np.random.default_rng(seed)
    centre = rng.uniform(100, 500, 2)
    truths = []
    for _ in range(int(rng.integers(1, 200))):
        rect = GraspRectangle.from_center(*(centre + rng.normal(0, 40, 2)), rng.uniform(-4, 4), *rng.uniform(5, 80, 2))
        truths.append(GraspRectangle(rect.points + rng.normal(0, 1.0, (4, 2)) * rng.integers(0, 2)))
    for theta in (rng.uniform(-4, 4), truths[0].angle + MAX_ANGLE_ERROR, math.pi / 2):
        pose = GraspPose(*((centre + rng.normal(0, 30, 2)) / SIZE), theta)
        score = score_pose(pose, truths, SIZE)
        assert (score.correct, score.best_iou, score.best_angle_error) == _score_every_truth(pose, truths, SIZE)
