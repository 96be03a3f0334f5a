"""Grasp geometry and the rectangle metric.

The conventions here are fixed (DESIGN.md, "Conventions") and pinned by tests:

- A grasp rectangle is 4 corner points ``(x, y)`` in pixels, Cornell file
  order. Edge p0→p1 is the gripper's *closing axis*; its length is the opening
  (``length``). Edge p1→p2 is the jaw size (``width``).
- The angle θ is in radians, counter-clockwise as displayed: image y points
  down, so θ = atan2(−dy, dx) of p0→p1, wrapped to [−π/2, π/2).
- A pose ``(x, y, θ)`` has x, y normalised by the width and height of the
  image the model sees; θ is measured in pixel space.
- A predicted pose is correct if some ground-truth rectangle lies within 30°
  (modulo π) and the predicted rectangle, drawn with that ground truth's
  length and width, overlaps it with IoU > 0.25.

numpy only: this module runs on the robot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_ANGLE_ERROR = math.radians(30.0)
MIN_IOU = 0.25

ImageSize = tuple[int, int]
"""(width, height) in pixels, the order PIL uses."""


def wrap_angle(theta: float) -> float:
    """Wrap a grasp angle to [−π/2, π/2); θ and θ ± π are the same grasp."""
    wrapped = (theta + math.pi / 2) % math.pi - math.pi / 2
    # Float rounding can land exactly on +π/2; that is the same grasp as −π/2.
    return -math.pi / 2 if wrapped >= math.pi / 2 else wrapped


def angle_difference(a: float, b: float) -> float:
    """Absolute difference between two grasp angles modulo π, in [0, π/2]."""
    return abs(wrap_angle(a - b))


def _axes(angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit closing axis (p0→p1) and jaw axis (p1→p2) in image coordinates."""
    closing = np.array([math.cos(angle), -math.sin(angle)])
    jaw = np.array([math.sin(angle), math.cos(angle)])
    return closing, jaw


class GraspRectangle:
    """An oriented grasp rectangle: 4 corner points (x, y) in Cornell order."""

    __slots__ = ("_points",)

    def __init__(self, points: np.ndarray | Sequence[Sequence[float]]):
        pts = np.array(points, dtype=np.float64)
        if pts.shape != (4, 2):
            raise ValueError(f"a grasp rectangle needs 4 (x, y) points, got shape {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise ValueError(f"grasp rectangle has non-finite coordinates: {pts.tolist()}")
        pts.flags.writeable = False
        self._points = pts

    @classmethod
    def from_center(cls, cx: float, cy: float, angle: float, length: float, width: float) -> GraspRectangle:
        """Build the rectangle with this centre, angle, opening and jaw size (pixels)."""
        closing, jaw = _axes(angle)
        c = np.array([cx, cy])
        half_l, half_w = closing * (length / 2), jaw * (width / 2)
        return cls([c - half_l - half_w, c + half_l - half_w, c + half_l + half_w, c - half_l + half_w])

    @property
    def points(self) -> np.ndarray:
        """The 4 corners, shape (4, 2), read-only."""
        return self._points

    @property
    def center(self) -> tuple[float, float]:
        """Centre (x, y) in pixels."""
        cx, cy = self._points.mean(axis=0)
        return float(cx), float(cy)

    @property
    def angle(self) -> float:
        """Angle of the closing axis p0→p1, radians in [−π/2, π/2)."""
        dx, dy = self._points[1] - self._points[0]
        return wrap_angle(math.atan2(-dy, dx))

    @property
    def length(self) -> float:
        """Gripper opening: the length of p0→p1, pixels."""
        return float(np.hypot(*(self._points[1] - self._points[0])))

    @property
    def width(self) -> float:
        """Jaw size: the length of p1→p2, pixels."""
        return float(np.hypot(*(self._points[2] - self._points[1])))

    @property
    def area(self) -> float:
        """Polygon area in square pixels."""
        return abs(_signed_area(self._points))

    def iou(self, other: GraspRectangle) -> float:
        """Exact intersection over union of the two polygons."""
        inter = _convex_intersection_area(self._points, other._points)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def transformed(self, matrix: np.ndarray) -> GraspRectangle:
        """Apply a 2×3 (or 3×3) affine map in pixel coordinates to every corner."""
        m = np.asarray(matrix, dtype=np.float64)
        return GraspRectangle(self._points @ m[:2, :2].T + m[:2, 2])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GraspRectangle) and np.array_equal(self._points, other._points)

    def __hash__(self) -> int:
        return hash(self._points.tobytes())

    def __repr__(self) -> str:
        cx, cy = self.center
        return (
            f"GraspRectangle(center=({cx:.1f}, {cy:.1f}), angle={math.degrees(self.angle):.1f}°, "
            f"length={self.length:.1f}, width={self.width:.1f})"
        )


@dataclass(frozen=True)
class GraspPose:
    """What the model predicts: centre normalised by image size, angle in radians."""

    x: float
    y: float
    theta: float

    def pixel_center(self, image_size: ImageSize) -> tuple[float, float]:
        """Centre in pixels of an image of this (width, height)."""
        return self.x * image_size[0], self.y * image_size[1]

    def to_rectangle(self, image_size: ImageSize, length: float, width: float) -> GraspRectangle:
        """The rectangle this pose makes with a given opening and jaw size (pixels)."""
        cx, cy = self.pixel_center(image_size)
        return GraspRectangle.from_center(cx, cy, self.theta, length, width)

    @classmethod
    def from_rectangle(cls, rect: GraspRectangle, image_size: ImageSize) -> GraspPose:
        """The pose of a rectangle in an image of this (width, height)."""
        cx, cy = rect.center
        return cls(cx / image_size[0], cy / image_size[1], rect.angle)


@dataclass(frozen=True)
class GraspScore:
    """How a predicted pose fares against the ground truth of one image."""

    correct: bool
    best_iou: float
    """Highest IoU over ground truths within the angle limit (0 if none is)."""
    best_angle_error: float
    """Smallest angle difference to any ground truth, radians (π/2 if none)."""


def score_pose(
    pose: GraspPose,
    truths: Sequence[GraspRectangle],
    image_size: ImageSize,
    max_angle_error: float = MAX_ANGLE_ERROR,
    min_iou: float = MIN_IOU,
) -> GraspScore:
    """Score a predicted pose with the rectangle metric against every ground truth.

    The polygon overlap is computed only for truths near enough to overlap at all: the rectangle drawn with a
    truth's opening and jaw size lies within half its diagonal of the pose's centre, and the truth within its
    furthest corner of its own centre; centres further apart than the two together mean no overlap (IoU 0). A
    dense label set (a grasp every centimetre) has hundreds of truths and a pose overlaps a few of them."""
    if not truths:
        return GraspScore(False, 0.0, math.pi / 2)
    corners = np.stack([truth.points for truth in truths])  # (n, 4, 2)
    closing, jaw = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 1]
    # angle_difference(pose.theta, truth.angle) for every truth, wrapped as wrap_angle does; the angles from
    # math.atan2 (numpy's may use other code on some CPUs: a truth at exactly 30° must not flip)
    errors = np.abs(_wrap(pose.theta - np.array([truth.angle for truth in truths])))
    centres = corners.mean(axis=1)
    radii = np.hypot(*(corners - centres[:, None]).transpose(2, 0, 1)).max(axis=1)
    drawn = np.hypot(np.hypot(*closing.T), np.hypot(*jaw.T)) / 2  # the predicted rectangle's half diagonal
    cx, cy = pose.pixel_center(image_size)
    apart = np.hypot(centres[:, 0] - cx, centres[:, 1] - cy)
    best_iou = 0.0
    for i in np.flatnonzero((errors <= max_angle_error) & (apart <= radii + drawn + 1e-6)):
        truth = truths[i]
        predicted = pose.to_rectangle(image_size, truth.length, truth.width)
        best_iou = max(best_iou, predicted.iou(truth))
    return GraspScore(best_iou > min_iou, best_iou, float(errors.min()))


def _wrap(theta: np.ndarray | float) -> np.ndarray:
    """``wrap_angle`` on arrays."""
    wrapped = np.remainder(np.asarray(theta) + math.pi / 2, math.pi) - math.pi / 2
    return np.where(wrapped >= math.pi / 2, -math.pi / 2, wrapped)


def is_correct(pose: GraspPose, truths: Sequence[GraspRectangle], image_size: ImageSize) -> bool:
    """The paper's rule: within 30° and IoU > 0.25 of some ground truth."""
    return score_pose(pose, truths, image_size).correct


def _signed_area(poly: np.ndarray) -> float:
    """Shoelace area; positive when the vertices run counter-clockwise in x-right, y-up axes."""
    x, y = poly[:, 0], poly[:, 1]
    following = _FOLLOWING.get(len(poly))
    if following is None:
        following = _FOLLOWING[len(poly)] = np.roll(np.arange(len(poly)), -1)
    return 0.5 * float(np.dot(x, y[following]) - np.dot(y, x[following]))


_FOLLOWING: dict[int, np.ndarray] = {}
"""For each polygon size, the index of each vertex's successor (``np.roll`` by one, without its overhead)."""


def _convex_intersection_area(subject: np.ndarray, clip: np.ndarray) -> float:
    """Area of the intersection of two convex polygons (Sutherland–Hodgman clipping)."""
    if _signed_area(clip) < 0:
        clip = clip[::-1]
    output = [tuple(p) for p in subject]
    for i in range(len(clip)):
        if not output:
            return 0.0
        a, b = clip[i], clip[(i + 1) % len(clip)]
        output = _clip_half_plane(output, a, b)
    return abs(_signed_area(np.array(output))) if len(output) >= 3 else 0.0


def _clip_half_plane(poly: list[tuple[float, float]], a: np.ndarray, b: np.ndarray) -> list:
    """Keep the part of a polygon on the left of the directed line a→b."""
    ex, ey = b[0] - a[0], b[1] - a[1]

    def side(p: tuple[float, float]) -> float:
        return ex * (p[1] - a[1]) - ey * (p[0] - a[0])

    result = []
    for j, current in enumerate(poly):
        previous = poly[j - 1]
        s_cur, s_prev = side(current), side(previous)
        if s_cur >= 0:
            if s_prev < 0:
                result.append(_lerp(previous, current, s_prev / (s_prev - s_cur)))
            result.append(current)
        elif s_prev >= 0:
            result.append(_lerp(previous, current, s_prev / (s_prev - s_cur)))
    return result


def _lerp(p: tuple[float, float], q: tuple[float, float], t: float) -> tuple[float, float]:
    return (p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1]))
