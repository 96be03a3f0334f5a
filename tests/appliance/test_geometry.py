import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.geometry import (
    Intrinsics,
    image_grasp_to_base,
    interpolate_pose,
    invert,
    median_depth,
    pose_matrix,
    rotation_exp,
    rotation_log,
    rotation_z,
    transform_points,
)

K = Intrinsics.from_fovy(40.0, 640, 480)
# A camera 0.7 m above (0.5, 0, 0) looking straight down: image right = +x, image up = +y.
T_BASE_CAM = pose_matrix(np.diag([1.0, -1.0, -1.0]), (0.5, 0.0, 0.7))

vectors = st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=3, max_size=3).map(np.array)


def test_intrinsics_from_fov_and_validation():
    assert K.fy == pytest.approx(240 / math.tan(math.radians(20)))
    assert (K.cx, K.cy) == (320, 240)
    with pytest.raises(ValueError):
        Intrinsics(0, 1, 0, 0, 10, 10)


@given(st.floats(0, 639), st.floats(0, 479), st.floats(0.1, 5.0))
def test_backproject_then_project_is_identity(u, v, z):
    p = K.backproject(u, v, z)
    assert p[2] == pytest.approx(z)
    assert K.project(p) == pytest.approx((u, v), abs=1e-6)


def test_project_refuses_points_behind_the_camera():
    with pytest.raises(ValueError, match="behind"):
        K.project(np.array([0.0, 0.0, -1.0]))


@given(vectors)
def test_rotation_log_exp_round_trip(v):
    angle = np.linalg.norm(v)
    if angle > math.pi - 1e-6:
        v = v / angle * (math.pi - 1e-6)
    R = rotation_exp(v)
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert np.allclose(rotation_exp(rotation_log(R)), R, atol=1e-6)


def test_interpolate_pose_ends_and_middle():
    a = pose_matrix(rotation_z(0.2), (0, 0, 0))
    b = pose_matrix(rotation_z(1.2), (1, 2, 3))
    assert np.allclose(interpolate_pose(a, b, 0.0), a)
    assert np.allclose(interpolate_pose(a, b, 1.0), b)
    assert np.allclose(interpolate_pose(a, b, 0.5), pose_matrix(rotation_z(0.7), (0.5, 1, 1.5)))
    assert np.allclose(invert(b) @ b, np.eye(4))


def test_median_depth_ignores_holes():
    depth = np.full((10, 10), np.nan, np.float32)
    assert median_depth(depth, 5, 5) is None
    depth[4:7, 4:7] = [[0.5, 0.6, 0.7], [0.5, 0.6, 0.7], [0.5, 0.6, 0.7]]
    depth[5, 5] = 0.0  # invalid reading
    assert median_depth(depth, 5, 5, window=3) == pytest.approx(0.6)
    assert median_depth(depth, 50, 5) is None


@pytest.mark.parametrize(
    "theta, expected", [(0.0, 0.0), (math.pi / 2, math.pi / 2), (math.radians(30), math.radians(30))]
)
def test_image_grasp_lifts_to_the_base_frame(theta, expected):
    """A table 0.7 m below the camera; a 5 cm object top at a known point."""
    point = np.array([0.55, -0.08, 0.05])
    u, v = K.project(transform_points(invert(T_BASE_CAM), point))
    depth = np.full((480, 640), 0.7, np.float32)
    depth[int(v) - 10 : int(v) + 10, int(u) - 10 : int(u) + 10] = 0.65
    grasp = image_grasp_to_base(u, v, theta, depth, K, T_BASE_CAM)
    assert np.allclose(grasp.point, point, atol=1e-3)
    assert abs(math.remainder(grasp.closing_angle - expected, math.pi)) < 1e-6
    assert image_grasp_to_base(u, v, theta, np.full((480, 640), np.nan, np.float32), K, T_BASE_CAM) is None


def test_grasp_height_comes_from_the_highest_surface_between_the_jaws():
    """Looking into a cup: the centre shows its floor, the jaws must clear its rim."""
    center = np.array([0.5, 0.0, 0.0])
    u, v = K.project(transform_points(invert(T_BASE_CAM), center))
    depth = np.full((480, 640), 0.7, np.float32)
    yy, xx = np.mgrid[0:480, 0:640]
    r = np.hypot(xx - u, yy - v)
    depth[r < 22] = 0.69  # floor, 1 cm up
    depth[(r >= 22) & (r < 25)] = 0.60  # the rim, 10 cm up
    grasp = image_grasp_to_base(u, v, 0.3, depth, K, T_BASE_CAM)
    assert grasp.point[2] == pytest.approx(0.01, abs=1e-3)
    assert grasp.top == pytest.approx(0.10, abs=2e-3)


def _table(h=120, w=160, z=0.6, seed=0):
    """A flat table 0.6 m below the camera with a sensor's ±3 mm noise."""
    return (z + np.random.default_rng(seed).uniform(-0.003, 0.003, (h, w))).astype(np.float32)


def test_depth_changed_ignores_noise_and_flicker_but_not_an_object_moved():
    from appliance.geometry import depth_changed

    before, after = _table(seed=0), _table(seed=1)
    assert depth_changed(before, after, 80, 60, 20) == ""  # new noise everywhere
    flicker = after.copy()
    flicker[::13, ::11] = np.nan  # lone pixels without a reading (under 1 % of the disc)
    assert depth_changed(before, flicker, 80, 60, 20) == ""
    placed = after.copy()
    placed[55:65, 75:90] -= 0.05  # a 5 cm object set down inside the disc
    why = depth_changed(before, placed, 80, 60, 20)
    assert "changed" in why and "by up to 5" in why  # 50 mm ± the noise
    assert depth_changed(placed, after, 80, 60, 20) != ""  # ... or taken away
    assert depth_changed(before, placed, 20, 20, 10) == ""  # elsewhere: not where the hand goes
    assert "outside" in depth_changed(before, after, 500, 60, 20)
    assert "size" in depth_changed(before, after[:100], 80, 60, 20)
