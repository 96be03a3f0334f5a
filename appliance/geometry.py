"""Camera geometry: pinhole intrinsics, projection, back-projection, rigid transforms.

Camera frame is OpenCV's: x right, y down, z forward (out of the lens).
Transforms are 4×4 homogeneous matrices, ``T_a_b`` maps points in frame b to
frame a. numpy only: this module runs on the robot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

JAW_HALF_M = 0.04
"""Half the open gripper's span (a Franka hand opens 8 cm): how far from the grasp centre a finger lands."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of ``width`` × ``height`` pixels (no distortion)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.fx <= 0 or self.fy <= 0 or self.width <= 0 or self.height <= 0:
            raise ValueError(f"intrinsics need positive focal lengths and size, got {self}")

    @classmethod
    def from_fovy(cls, fovy_deg: float, width: int, height: int) -> Intrinsics:
        """Square pixels and a centred principal point, from the vertical field of view."""
        f = (height / 2) / math.tan(math.radians(fovy_deg) / 2)
        return cls(f, f, width / 2, height / 2, width, height)

    @property
    def matrix(self) -> np.ndarray:
        """The 3×3 camera matrix K."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Pixel coordinates (u, v) of camera-frame points (N×3 or 3); z must be positive."""
        p = np.atleast_2d(np.asarray(points_cam, dtype=np.float64))
        if np.any(p[:, 2] <= 0):
            raise ValueError("cannot project points at or behind the camera (z <= 0)")
        uv = np.stack([self.fx * p[:, 0] / p[:, 2] + self.cx, self.fy * p[:, 1] / p[:, 2] + self.cy], axis=1)
        return uv if np.ndim(points_cam) > 1 else uv[0]

    def backproject(self, u: float, v: float, depth: float) -> np.ndarray:
        """Camera-frame point seen at pixel (u, v) with z-depth ``depth`` metres."""
        return np.array([(u - self.cx) / self.fx * depth, (v - self.cy) / self.fy * depth, depth])


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4×4 transform to N×3 (or 3) points."""
    p = np.asarray(points, dtype=np.float64)
    out = p @ T[:3, :3].T + T[:3, 3]
    return out


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4×4 transform."""
    R, t = T[:3, :3], T[:3, 3]
    inv = np.eye(4)
    inv[:3, :3] = R.T
    inv[:3, 3] = -R.T @ t
    return inv


def rotation_z(angle: float) -> np.ndarray:
    """3×3 rotation about z by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pose_matrix(rotation: np.ndarray, translation) -> np.ndarray:
    """4×4 transform from a 3×3 rotation and a translation."""
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = translation
    return T


def rotation_log(R: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (the inverse of ``rotation_exp``)."""
    cos = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    angle = math.acos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    antisym = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2  # sin(angle) · axis
    if math.pi - angle < 1e-3:  # sin(angle) ≈ 0: the symmetric part is cos·I + (1 − cos)·k kᵀ
        kk = ((R + R.T) / 2 - cos * np.eye(3)) / (1 - cos)
        i = int(np.argmax(np.diag(kk)))
        axis = kk[:, i] / math.sqrt(kk[i, i])
        return axis * angle * (-1.0 if axis @ antisym < 0 else 1.0)
    return antisym / math.sin(angle) * angle


def rotation_exp(v: np.ndarray) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (Rodrigues)."""
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = np.asarray(v) / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def interpolate_pose(start: np.ndarray, end: np.ndarray, s: float) -> np.ndarray:
    """Pose a fraction ``s`` of the way from start to end (straight line, geodesic rotation)."""
    R0 = start[:3, :3]
    delta = rotation_log(R0.T @ end[:3, :3])
    return pose_matrix(R0 @ rotation_exp(s * delta), start[:3, 3] + s * (end[:3, 3] - start[:3, 3]))


def median_depth(depth: np.ndarray, u: float, v: float, window: int = 5) -> float | None:
    """Median of the valid (finite, positive) depths in a window around (u, v); None if none."""
    h, w = depth.shape
    iu, iv, r = int(u), int(v), window // 2
    if not (0 <= iu < w and 0 <= iv < h):
        return None
    patch = depth[max(0, iv - r) : iv + r + 1, max(0, iu - r) : iu + r + 1]
    valid = patch[np.isfinite(patch) & (patch > 0)]
    return float(np.median(valid)) if valid.size else None


DEPTH_CHANGE_M = 0.01
"""A depth reading that moved by more than this between two pictures is a change of the table, not noise."""
CHANGED_SHARE = 0.02
"""The share of a window's readings that must change (or appear, or vanish) for the window to have changed."""


def depth_changed(before: np.ndarray, after: np.ndarray, u: float, v: float, radius_px: float) -> str:
    """How the depth in the disc of ``radius_px`` around (u, v) differs between two aligned pictures ('' when it
    does not): more than ``CHANGED_SHARE`` of its pixels moved by over ``DEPTH_CHANGE_M``, or lost or gained a
    reading. Single pixels flicker on a real sensor; an object moved, taken or put there changes many."""
    if before.shape != after.shape:
        return f"the pictures differ in size ({before.shape} and {after.shape})"
    h, w = before.shape
    r = max(1, int(math.ceil(radius_px)))
    iu, iv = int(u), int(v)
    rows, cols = slice(max(0, iv - r), min(h, iv + r + 1)), slice(max(0, iu - r), min(w, iu + r + 1))
    outside = f"the grasp centre ({u:.0f}, {v:.0f}) lies outside the picture"
    if rows.start >= rows.stop or cols.start >= cols.stop:
        return outside
    vv, uu = np.mgrid[rows, cols]
    disc = (uu - u) ** 2 + (vv - v) ** 2 <= radius_px**2
    if not disc.any():
        return outside
    a, b = before[rows, cols][disc], after[rows, cols][disc]
    valid_a, valid_b = np.isfinite(a) & (a > 0), np.isfinite(b) & (b > 0)
    both = valid_a & valid_b
    moved = both & (np.abs(np.where(both, a - b, 0.0)) > DEPTH_CHANGE_M)
    changed = int(moved.sum()) + int((valid_a != valid_b).sum())
    if changed <= CHANGED_SHARE * disc.sum():
        return ""
    largest = float(np.abs(np.where(moved, a - b, 0.0)).max())
    return (
        f"{100 * changed / disc.sum():.0f} % of the depth around the grasp changed (by up to {1000 * largest:.0f} mm)"
    )


@dataclass(frozen=True)
class SurfaceGrasp:
    """A grasp seen from above, in the robot base frame: the surface point under the grasp centre,
    the direction the jaws close along (angle in the base xy-plane), and the camera ray through the
    centre, so the grasp can be placed on that ray at the height the fingers close at."""

    point: np.ndarray
    closing_angle: float
    ray_origin: np.ndarray
    ray_direction: np.ndarray
    top: float
    """Base-frame height of the highest surface between the open jaws (a cup's rim, not its floor)."""

    def at_height(self, z: float) -> np.ndarray:
        """Where the centre's camera ray crosses the plane at height ``z`` (the surface point if parallel)."""
        dz = self.ray_direction[2]
        if abs(dz) < 1e-9:
            return np.array([self.point[0], self.point[1], z])
        return self.ray_origin + (z - self.ray_origin[2]) / dz * self.ray_direction


def image_grasp_to_base(
    u: float,
    v: float,
    theta: float,
    depth: np.ndarray,
    K: Intrinsics,
    T_base_cam: np.ndarray,
    window: int = 5,
    jaw_half_m: float = JAW_HALF_M,
) -> SurfaceGrasp | None:
    """Lift an image grasp (pixel centre, image angle θ) to the base frame; None without valid depth.

    The centre is back-projected with the median depth of a small window; the
    closing direction comes from back-projecting two points along the image
    grasp axis at that depth, so camera roll or tilt is accounted for. The
    fingers must clear the highest surface between the open jaws, so ``top``
    is taken along the whole closing axis (±``jaw_half_m``), not at the centre:
    looking into a cup shows its floor, the jaws meet its rim.
    """
    z = median_depth(depth, u, v, window)
    if z is None:
        return None
    cos, sin = math.cos(theta), -math.sin(theta)
    axis_px = 20.0
    pts_cam = np.stack(
        [
            K.backproject(u, v, z),
            K.backproject(u - axis_px * cos, v - axis_px * sin, z),
            K.backproject(u + axis_px * cos, v + axis_px * sin, z),
        ]
    )
    center, a, b = transform_points(T_base_cam, pts_cam)
    highest = _nearest_along(depth, u, v, cos, sin, jaw_half_m * K.fx / z) or z
    top = transform_points(T_base_cam, K.backproject(u, v, highest))[2]
    origin = T_base_cam[:3, 3]
    return SurfaceGrasp(center, math.atan2(b[1] - a[1], b[0] - a[0]), origin, center - origin, float(top))


def _nearest_along(depth: np.ndarray, u: float, v: float, cos: float, sin: float, half_px: float) -> float | None:
    """A low percentile of the valid depths on a 5-pixel-wide strip along (cos, sin) through (u, v)."""
    h, w = depth.shape
    t = np.arange(-half_px, half_px + 1, 1.0)
    across = np.arange(-2, 3)
    us = (u + t[:, None] * cos - across[None, :] * sin).ravel().astype(int)
    vs = (v + t[:, None] * sin + across[None, :] * cos).ravel().astype(int)
    inside = (us >= 0) & (us < w) & (vs >= 0) & (vs < h)
    values = depth[vs[inside], us[inside]]
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.percentile(values, 2)) if values.size else None
