"""The simulated cell's camera and object library, rendered for real (MuJoCo on the CPU)."""

import math
import os
import random

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "osmesa")
mujoco = pytest.importorskip("mujoco")

from appliance.geometry import transform_points  # noqa: E402
from appliance.sim.objects import CATEGORIES, MAX_OPENING, make_object  # noqa: E402
from appliance.sim.scene import (  # noqa: E402
    CameraRenderer,
    CellCamera,
    SideCamera,
    TableConfig,
    body_pose,
    object_grasps,
    side_camera_xml,
    standalone_xml,
)
from training.reasoning import load_templates  # noqa: E402

CAMERA, TABLE = CellCamera(), TableConfig()


def render_marker(point, half=0.004):
    """Render a small red cube whose top face centre is ``point``."""
    x, y, z = point
    body = (
        f'<body name="m" pos="{x} {y} {z - half}"><geom type="box" size="{half} {half} {half}" rgba="1 0 0 1"/></body>'
    )
    model = mujoco.MjModel.from_xml_string(standalone_xml(CAMERA, TABLE, [body], random.Random(0)))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    with CameraRenderer(model, CAMERA) as r:
        return r.render(data)


@pytest.mark.parametrize("point", [(0.5, 0.0, 0.05), (0.62, 0.12, 0.02), (0.38, -0.15, 0.1)])
def test_world_point_projects_to_its_pixel_and_back(point):
    rgb, depth = render_marker(point)
    red = (rgb[..., 0] > 150) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    assert red.sum() > 10
    vs, us = np.nonzero(red)
    K, T_cam_base = CAMERA.intrinsics, np.linalg.inv(CAMERA.T_base_cam)
    u, v = K.project(transform_points(T_cam_base, np.array(point)))
    assert abs(us.mean() + 0.5 - u) <= 2 and abs(vs.mean() + 0.5 - v) <= 2
    # back-project the rendered depth at the marker's pixel: within 5 mm of the true point
    iu, iv = int(round(us.mean())), int(round(vs.mean()))
    back = transform_points(CAMERA.T_base_cam, K.backproject(iu + 0.5, iv + 0.5, float(depth[iv, iu])))
    assert np.linalg.norm(back - np.array(point)) < 0.005


def ball_seen_from_the_side(height: float) -> tuple[int, float]:
    """Pixels of a ball at (0.5, 0) resting ``height`` above the table in the side camera, and their mean row."""
    ball = make_object("ball", random.Random(3), "ball")
    body = ball.to_mjcf("b", (0.5, 0.0), 0.0, base_z=height)
    xml = standalone_xml(CAMERA, TABLE, [body], random.Random(0), [ball.assets_mjcf("b")])
    model = mujoco.MjModel.from_xml_string(xml.replace("</worldbody>", side_camera_xml(SideCamera()) + "</worldbody>"))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    geoms = np.flatnonzero(model.geom_bodyid == mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "b"))
    with CameraRenderer(model, CAMERA) as r:
        seen = np.isin(r.segment(data, "side"), geoms)
        rgb = r.picture(data, "side")
    assert rgb.shape == (CAMERA.height, CAMERA.width, 3)
    return int(seen.sum()), float(np.nonzero(seen)[0].mean())


def test_the_side_camera_sees_an_object_lifted_above_the_table():
    on_table, row_on_table = ball_seen_from_the_side(0.0)
    lifted, row_lifted = ball_seen_from_the_side(0.15)  # where a lift of 15 cm takes it
    assert on_table > 500 and lifted > 500  # whole, in view, not a speck
    assert row_on_table - row_lifted > 60  # and seen to rise: well above where it lay


def test_the_side_camera_refuses_to_look_straight_down():
    with pytest.raises(ValueError, match="straight down"):
        SideCamera(position=(0.5, 0.0, 0.7), target=(0.5, 0.0, 0.0))


def test_table_depth_is_the_camera_height():
    _, depth = render_marker((0.5, 0.0, 0.05))
    assert depth[10, 10] == pytest.approx(CAMERA.position[2], abs=1e-3)


def test_library_covers_the_synthetic_categories_with_sound_semantics():
    templates = load_templates()
    synthetic = {c.name for c in templates.categories.values() if c.synthetic}
    assert set(CATEGORIES) == synthetic and len(CATEGORIES) >= 16
    for category in CATEGORIES:
        semantics = templates.category(category)
        for seed in range(3):
            obj = make_object(category, random.Random(seed))
            assert 0.01 < obj.mass < 1.0 and obj.friction >= 0.9
            assert any(r.allowed for r in obj.regions)
            for region in obj.regions:
                assert region.opening <= MAX_OPENING
                if region.allowed:
                    assert region.part in semantics.grasp_at, (category, region.part)
                else:  # a forbidden part, or an allowed part at an impossible angle
                    assert region.part in semantics.avoid or region.part in semantics.grasp_at, (category, region.part)
            assert set(obj.parts) <= set(semantics.parts) | {"pages", "wall", "shaft", "head", "stem", "cap", "center"}


def test_instances_vary_in_size_and_colour():
    a, b = make_object("mug", random.Random(1)), make_object("mug", random.Random(2))
    assert a.geoms[0].size != b.geoms[0].size or a.geoms[0].pos != b.geoms[0].pos
    assert a.colors != b.colors
    with pytest.raises(ValueError, match="unknown object category"):
        make_object("teapot", random.Random(0))


@pytest.mark.parametrize("category", ["screwdriver", "mug", "sunglasses"])
def test_rectangles_land_on_the_right_parts(category):
    """Allowed rectangles centre on pixels of allowed parts, forbidden ones on forbidden parts."""
    rng = random.Random(3)
    obj = make_object(category, rng)
    xml = standalone_xml(CAMERA, TABLE, [obj.to_mjcf("obj", (0.5, 0.02), 0.7)], rng, [obj.assets_mjcf("obj")])
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_step(model, data, nstep=300)
    with CameraRenderer(model, CAMERA) as r:
        r._renderer.update_scene(data, "top")
        r._renderer.enable_segmentation_rendering()
        seg = r._renderer.render()[..., 0]
        r._renderer.disable_segmentation_rendering()
    part_of_geom = {g: mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in range(model.ngeom)}
    for grasp in object_grasps(obj, body_pose(model, data, "obj"), CAMERA):
        if grasp.part in ("rim", "bridge", "frame", "handle"):
            u, v = (int(c) for c in grasp.rectangle.center)
            window = seg[v - 3 : v + 4, u - 3 : u + 4].ravel()
            names = {part_of_geom.get(int(g)) or "" for g in window if g >= 0}
            assert any(
                n.endswith("_" + grasp.part) or (grasp.part == "bridge" and n.endswith("_frame")) for n in names
            ), (
                grasp.part,
                names,
            )
            assert math.isfinite(grasp.rectangle.angle)


@pytest.mark.parametrize("category", ["book", "plate", "mug", "screwdriver"])
def test_labels_cover_every_point_of_an_allowed_region(category):
    """Anywhere along an allowed segment or rim, a labelled centre lies within half a label spacing
    (plus rounding): a grasp between two labels is not scored a miss by the rectangle metric."""
    from appliance.sim.objects import LABEL_SPACING
    from appliance.sim.scene import region_grasps

    obj = make_object(category, random.Random(4))
    T = np.eye(4)
    T[:3, 3] = (0.5, 0.0, 0.0)
    metres_per_px = CAMERA.position[2] / CAMERA.intrinsics.fx  # at the table: an upper bound for raised parts
    for region in obj.regions:
        if not region.allowed:
            continue
        centres = np.array([g.rectangle.center for g in region_grasps(region, T, CAMERA)])
        start, end = np.array(region.start), np.array(region.end)

        def gap_px(t: float, start=start, end=end, centres=centres) -> float:
            """Pixels from the region's point at t (0: start, 1: end), projected, to the nearest label."""
            point = transform_points(np.linalg.inv(CAMERA.T_base_cam) @ T, (start + t * (end - start))[None])
            u, v = CAMERA.intrinsics.project(point)[0]
            return float(np.min(np.hypot(centres[:, 0] - u, centres[:, 1] - v)))

        for t in np.linspace(0, 1, 50):
            assert gap_px(t) * metres_per_px <= LABEL_SPACING / 2 + 1e-3, (category, region.part, t)
        # the first datasets' labels (the ends and the middle) are still labels
        assert all(gap_px(t) < 1e-6 for t in (0.0, 0.5, 1.0)), (category, region.part)
    rims = [r for r in obj.regions if r.part == "rim" and r.allowed]
    if category == "plate":  # all round: neighbours one spacing apart along the circumference
        radius = math.hypot(*rims[0].start[:2])
        assert len(rims) >= 2 * math.pi * radius / LABEL_SPACING and len(rims) % 8 == 0  # the first 8 among them
