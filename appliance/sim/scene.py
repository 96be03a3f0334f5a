"""The grasp cell scene shared by the synthetic dataset and the simulated cell.

A table whose top is the plane z = 0 in front of the robot base, lights, a
top-down RGB-D camera, and objects from the library. The dataset renders this
scene without the arm; the sim cell adds the same elements to franky-sim's FR3
scene, so a model trained on the dataset sees the cell as it saw its data.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from appliance.geometry import Intrinsics, invert, pose_matrix, transform_points
from appliance.grasp import GraspRectangle

from .objects import LABEL_SPACING, GraspRegion, ObjectModel

JAW_SIZE = 0.02  # metres: the Franka Hand's finger pads, drawn as the rectangle's width
ROUND_ANGLES = 4


@dataclass(frozen=True)
class CellCamera:
    """The fixed top-down camera: position in the robot base frame, field of view, resolution."""

    position: tuple[float, float, float] = (0.5, 0.0, 0.7)
    fovy: float = 40.0
    width: int = 640
    height: int = 480

    @property
    def intrinsics(self) -> Intrinsics:
        return Intrinsics.from_fovy(self.fovy, self.width, self.height)

    @property
    def T_base_cam(self) -> np.ndarray:
        """Camera pose (OpenCV axes: x right, y down, z forward) in the base frame: looking straight down."""
        return pose_matrix(np.diag([1.0, -1.0, -1.0]), self.position)


@dataclass(frozen=True)
class SideCamera:
    """A fixed camera beside the table, for people rather than the model: from the robot's left (the side the
    cell parks its unused objects on, behind this camera), a little beyond the table centre and above it, it
    sees the table and the lift height, so an object held between the fingers after a lift shows under the
    hand (the top camera sees only the hand then).
    It renders at the top camera's resolution; no depth or calibration is served for it."""

    position: tuple[float, float, float] = (0.64, 0.75, 0.36)
    target: tuple[float, float, float] = (0.5, 0.0, 0.2)
    """The point it looks at: above the table centre, where a lift (15 cm) holds an object under the hand."""
    fovy: float = 45.0

    def __post_init__(self) -> None:
        forward = np.subtract(self.target, self.position)
        if np.linalg.norm(forward[:2]) < 1e-6:
            raise ValueError("the side camera must not look straight down (the top camera does)")


@dataclass(frozen=True)
class TableConfig:
    """The table top (z = 0) and the area objects are placed in."""

    center: tuple[float, float] = (0.5, 0.0)
    half_size: tuple[float, float] = (0.4, 0.5)
    workspace: tuple[float, float] = (0.1, 0.1)
    """Half extents (x, y) around the centre where a single object is placed."""
    clutter: tuple[float, float] = (0.16, 0.16)
    """Half extents (x, y) around the centre that every object of a cluttered scene lies within
    (its whole footprint): inside the models' 320-pixel workspace crop."""

    @property
    def clutter_area(self) -> tuple[float, float, float, float]:
        """(centre x, centre y, half x, half y) of the cluttered scenes' area."""
        return (*self.center, *self.clutter)


def camera_xml(camera: CellCamera, name: str = "top") -> str:
    x, y, z = camera.position
    return f'<camera name="{name}" pos="{x} {y} {z}" quat="1 0 0 0" fovy="{camera.fovy}"/>'


def side_camera_xml(camera: SideCamera, name: str = "side") -> str:
    """The side camera, aimed with ``xyaxes``: image right is level, image up tilts with the view."""
    forward = np.subtract(camera.target, camera.position)
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, (0.0, 0.0, 1.0))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)  # MuJoCo cameras look along their -z: x right, y up
    axes = " ".join(f"{v:.6f}" for v in (*right, *up))
    x, y, z = camera.position
    return f'<camera name="{name}" pos="{x} {y} {z}" xyaxes="{axes}" fovy="{camera.fovy}"/>'


def table_xml(table: TableConfig, rgba) -> str:
    (cx, cy), (hx, hy) = table.center, table.half_size
    color = " ".join(f"{c:.3f}" for c in rgba)
    return (
        f'<geom name="table" type="box" size="{hx} {hy} 0.02" pos="{cx} {cy} -0.02" rgba="{color}" '
        'friction="1 0.01 0.001" condim="4"/>'
    )


def lights_xml(rng: random.Random | None = None) -> str:
    k = rng.uniform(0.45, 0.65) if rng else 0.55
    return (
        f'<light name="cell_key" pos="0.5 -0.3 2.0" dir="0 0.15 -1" directional="true" castshadow="false" '
        f'diffuse="{0.7 * k:.3f} {0.7 * k:.3f} {0.68 * k:.3f}" specular="0.1 0.1 0.1"/>'
        '<light name="cell_fill" pos="0.5 0.5 2.0" dir="0 -0.3 -1" directional="true" castshadow="false" '
        'diffuse="0.2 0.2 0.22" specular="0 0 0"/>'
    )


def table_color(rng: random.Random) -> tuple[float, float, float, float]:
    """A table colour: light wood, grey or pale laminate."""
    base = rng.choice([(0.72, 0.6, 0.45), (0.6, 0.6, 0.6), (0.8, 0.78, 0.72), (0.55, 0.45, 0.35)])
    return tuple(min(1.0, max(0.0, c + rng.uniform(-0.06, 0.06))) for c in base) + (1.0,)


def standalone_xml(
    camera: CellCamera, table: TableConfig, bodies: list[str], rng: random.Random, assets: list[str] = ()
) -> str:
    """A MuJoCo model with table, lights, camera and the given object bodies and assets (no arm)."""
    return (
        f'<mujoco model="rtgrasp_cell"><compiler angle="radian"/><option timestep="0.002"/>'
        f"<asset>{''.join(assets)}</asset>"
        f'<visual><global offwidth="{camera.width}" offheight="{camera.height}"/>'
        '<headlight diffuse="0.1 0.1 0.1" ambient="0.2 0.2 0.2" specular="0 0 0"/></visual>'
        f"<worldbody>{lights_xml(rng)}{camera_xml(camera)}{table_xml(table, table_color(rng))}"
        + "".join(bodies)
        + "</worldbody></mujoco>"
    )


def place(table: TableConfig, rng: random.Random) -> tuple[tuple[float, float], float]:
    """A random object position (x, y) in the workspace and yaw."""
    (cx, cy), (wx, wy) = table.center, table.workspace
    return (cx + rng.uniform(-wx, wx), cy + rng.uniform(-wy, wy)), rng.uniform(-math.pi, math.pi)


@dataclass(frozen=True)
class ImageGrasp:
    """A grasp rectangle in the image, from which region (part) and whether it is allowed."""

    rectangle: GraspRectangle
    part: str
    allowed: bool


def region_grasps(region: GraspRegion, T_base_obj: np.ndarray, camera: CellCamera) -> list[ImageGrasp]:
    """Rectangles (in pixels) of one grasp region of an object at pose ``T_base_obj``."""
    K = camera.intrinsics
    T_cam_base = invert(camera.T_base_cam)
    start, end = np.array(region.start), np.array(region.end)
    # an odd count: the middle is always a label, and the labels include the first datasets' 3 (ends, middle)
    samples = 1 if np.allclose(start, end) else 2 * math.ceil(np.linalg.norm(end - start) / (2 * LABEL_SPACING)) + 1
    centers = [start + t * (end - start) for t in np.linspace(0, 1, samples)]
    axes = (
        [np.array([*region.axis, 0.0])]
        if region.axis
        else [np.array([math.cos(a), math.sin(a), 0.0]) for a in np.arange(ROUND_ANGLES) * math.pi / ROUND_ANGLES]
    )
    out = []
    for c in centers:
        for axis in axes:
            half = axis / np.linalg.norm(axis) * region.opening / 2
            ends_obj = np.stack([c - half, c + half, c])
            ends_cam = transform_points(T_cam_base @ T_base_obj, ends_obj)
            (u0, v0), (u1, v1), (uc, vc) = K.project(ends_cam)
            jaw_px = JAW_SIZE * K.fx / ends_cam[2, 2]
            angle = math.atan2(-(v1 - v0), u1 - u0)
            rect = GraspRectangle.from_center(uc, vc, angle, math.hypot(u1 - u0, v1 - v0), jaw_px)
            out.append(ImageGrasp(rect, region.part, region.allowed))
    return out


def region_pixels(region: GraspRegion, T_base_obj: np.ndarray, camera: CellCamera) -> dict:
    """A grasp region in the image: its segment (pixels), closing angle (None: any), opening (pixels),
    and the metres per pixel at its height, for the part-aware metric."""
    K = camera.intrinsics
    T = invert(camera.T_base_cam) @ T_base_obj
    start, end = np.array(region.start), np.array(region.end)
    axis = np.array([*(region.axis or (1.0, 0.0)), 0.0])
    pts = transform_points(T, np.stack([start, end, start + axis * region.opening / 2]))
    (u0, v0), (u1, v1), (ua, va) = K.project(pts)
    mpp = float(pts[0, 2] / K.fx)
    angle = math.atan2(-(va - v0), ua - u0) if region.axis else None
    return {
        "part": region.part,
        "allowed": region.allowed,
        "start": [round(float(u0), 3), round(float(v0), 3)],
        "end": [round(float(u1), 3), round(float(v1), 3)],
        "angle": None if angle is None else round(angle, 5),
        "opening": round(region.opening / mpp, 3),
        "mpp": round(mpp, 7),
    }


def object_grasps(obj: ObjectModel, T_base_obj: np.ndarray, camera: CellCamera) -> list[ImageGrasp]:
    """All rectangles of every grasp region of the object."""
    return [g for region in obj.regions for g in region_grasps(region, T_base_obj, camera)]


def body_pose(model, data, name: str) -> np.ndarray:
    """4×4 pose of a MuJoCo body in the world (= robot base) frame."""
    import mujoco

    body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
    if body < 0:
        raise KeyError(f"no body named {name!r} in the scene")
    return pose_matrix(data.xmat[body].reshape(3, 3), data.xpos[body])


class CameraRenderer:
    """Render RGB and metric z-depth from the scene's top-down camera (CPU: MUJOCO_GL=osmesa), and pictures
    from any other camera of the scene (the side camera) at the same resolution."""

    def __init__(self, model, camera: CellCamera, name: str = "top"):
        import mujoco

        self._renderer = mujoco.Renderer(model, camera.height, camera.width)
        self._name = name

    def render(self, data) -> tuple[np.ndarray, np.ndarray]:
        """(H×W×3 uint8 RGB, H×W float32 depth in metres along the optical axis)."""
        r = self._renderer
        r.update_scene(data, self._name)
        rgb = r.render().copy()
        r.enable_depth_rendering()
        r.update_scene(data, self._name)
        depth = r.render().astype(np.float32)
        r.disable_depth_rendering()
        return rgb, depth

    def picture(self, data, camera: str) -> np.ndarray:
        """H×W×3 uint8 RGB from the named camera of the scene."""
        self._renderer.update_scene(data, camera)
        return self._renderer.render().copy()

    def segment(self, data, camera: str | None = None) -> np.ndarray:
        """H×W int32: the geom seen at each pixel (-1: nothing), from this renderer's camera or the named one."""
        r = self._renderer
        r.enable_segmentation_rendering()
        r.update_scene(data, camera or self._name)
        ids = r.render()[:, :, 0].astype(np.int32)
        r.disable_segmentation_rendering()
        return ids

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
