import math
import random

import numpy as np
import pytest

from appliance.sim.clutter import footprint, inside, overlaps
from appliance.sim.hold import LIFT_SUCCESS_M, clutter_scene, held_by_allowed_part, lifted, others_moved
from appliance.sim.objects import CATEGORIES, make_object

# a knife standing at (0.5, 0.1), turned a quarter turn: its handle runs along -y from there, its blade along +y
KNIFE = make_object("knife", random.Random(3))
POSE = [0.5, 0.1, 0.01, math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]


def contact(part, local_x, local_y):
    """A finger contact at a point of the knife's frame, in the world."""
    return {"part": part, "pos": [0.5 - local_y, 0.1 + local_x, 0.01]}


def handle_middle():
    region = next(r for r in KNIFE.regions if r.part == "handle" and r.allowed)
    return (region.start[0] + region.end[0]) / 2, region.opening / 2


def test_fingers_on_the_handle_hold_it_well():
    x, half = handle_middle()
    ok, why = held_by_allowed_part(KNIFE, POSE, [contact("handle", x, half), contact("handle", x, -half)])
    assert ok and why == ""


def test_a_finger_on_the_blade_or_off_the_regions_does_not():
    x, half = handle_middle()
    ok, why = held_by_allowed_part(KNIFE, POSE, [contact("handle", x, half), contact("blade", 0.05, -0.01)])
    assert not ok and why == "a finger on the blade"
    # the very end of the handle, 3 cm beyond its grasp region: a handle contact, but off the allowed region
    end = min(r.start[0] for r in KNIFE.regions if r.part == "handle") - 0.03
    ok, why = held_by_allowed_part(KNIFE, POSE, [contact("handle", end, 0.0)])
    assert not ok and "off every allowed region" in why
    assert held_by_allowed_part(KNIFE, POSE, []) == (False, "no finger touches it")


def test_other_objects_must_stay_put():
    before = {
        "a": {"com": [0.5, 0.0, 0.02], "on_table": True},
        "b": {"com": [0.6, 0.1, 0.02], "on_table": True},
        "c": {"com": [0.0, 1.2, -0.03], "on_table": False},  # parked on the floor: not in the scene
    }
    after = {
        "a": {"com": [0.5, 0.0, 0.2], "on_table": False},  # the target, lifted
        "b": {"com": [0.63, 0.1, 0.02], "on_table": True},
        "c": {"com": [0.0, 1.3, -0.03], "on_table": False},
    }
    assert others_moved(before, after, "a") == pytest.approx(0.03)


def test_lifted_names_every_object_that_left_the_table_high_enough():
    def state(z, on_table):
        return {"com": [0.5, 0.0, z], "on_table": on_table}

    before = {"a": state(0.02, True), "b": state(0.02, True), "c": state(0.02, True), "d": state(0.3, False)}
    after = {
        "a": state(0.02 + LIFT_SUCCESS_M, False),  # the target, lifted
        "b": state(0.02 + LIFT_SUCCESS_M - 0.001, False),  # tipped off the table, not lifted
        "c": state(0.2, False),  # another, carried along
        "d": state(0.5, False),  # never on the table
    }
    assert lifted(before, after) == ["a", "c"]
    assert lifted(before, before) == []


def test_cluttered_scenes_put_the_target_beside_others_without_overlap():
    library = [make_object(c, random.Random(i), f"{c}-cell") for i, c in enumerate(CATEGORIES)]
    area = (0.5, 0.0, 0.16, 0.16)
    for seed in range(5):
        scene = clutter_scene(library, 4, 3, area, random.Random(seed))
        assert scene is not None and scene[0]["object"] == library[4].object_id
        assert len({p["object"] for p in scene}) == 3
        objects = {o.object_id: o for o in library}
        prints = [footprint(objects[p["object"]], p["x"], p["y"], p["yaw"]) for p in scene]
        assert all(inside(f, area) for f in prints)
        assert not any(overlaps(prints[i], prints[j]) for i in range(3) for j in range(i))
    with pytest.raises(ValueError, match="1..19"):
        clutter_scene(library, 0, 20, area, random.Random(0))
    assert np.isfinite(scene[0]["x"])
