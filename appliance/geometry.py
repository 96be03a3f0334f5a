"""Camera geometry: pinhole intrinsics, projection, back-projection, rigid transforms.

Camera frame is OpenCV's: x right, y down, z forward (out of the lens).
Transforms are 4×4 homogeneous matrices, ``T_a_b`` maps points in frame b to
frame a. numpy only: this module runs on the robot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
