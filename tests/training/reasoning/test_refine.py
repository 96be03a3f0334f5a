import math
import random

import pytest

from appliance.grasp import GraspPose, GraspRectangle, angle_difference
from training.reasoning.refine import (
    MIN_ROTATION,
    SHIFT,
    Refinement,
    SceneGrasps,
    draw_refinement,
    possible_requests,
    satisfies,
    target,
)

SIZE = (200, 200)


def rect(x: float, y: float, theta: float, length: float = 20.0, width: float = 10.0) -> GraspRectangle:
    return GraspRectangle.from_center(x * SIZE[0], y * SIZE[1], theta, length, width)


def along(xs, y, theta):
    """Labels every 0.025 along a horizontal bar (a handle), closing across it."""
    return [rect(x, y, theta) for x in xs]


# object 0: a square block (grasps at its centre along both axes) beside a long bar (a handle, closing vertically)
BLOCK = [rect(0.30, 0.50, 0.0), rect(0.30, 0.50, math.pi / 2 - 1e-9)]
BAR = along([0.45 + 0.025 * i for i in range(13)], 0.50, math.pi / 2 - 1e-9)
# object 1: a round rim: grasps all round a circle, closing radially
RIM = [rect(0.5 + 0.15 * math.cos(a), 0.2 + 0.15 * math.sin(a), -a) for a in [2 * math.pi * i / 16 for i in range(16)]]
RECTS = BLOCK + BAR + RIM
PARTS = ["body"] * len(BLOCK) + ["handle"] * len(BAR) + ["rim"] * len(RIM)
OWNERS = [0] * (len(BLOCK) + len(BAR)) + [1] * len(RIM)
SCENE = SceneGrasps(tuple(RECTS), SIZE, tuple(PARTS), tuple(OWNERS), {0: "hammer", 1: "bowl"})


def pose(r: GraspRectangle) -> GraspPose:
    return GraspPose.from_rectangle(r, SIZE)


def test_satisfies_each_kind():
    start = GraspPose(0.5, 0.5, 0.0)
    assert satisfies(Refinement("rotate"), start, GraspPose(0.5, 0.5, math.radians(70)))
    assert not satisfies(Refinement("rotate"), start, GraspPose(0.5, 0.5, math.radians(50)))
    assert satisfies(Refinement("side", side="left"), start, GraspPose(0.44, 0.5, 0.0))
    assert not satisfies(Refinement("side", side="right"), start, GraspPose(0.44, 0.5, 0.0))
    assert satisfies(Refinement("side", side="bottom"), start, GraspPose(0.5, 0.6, 0.0))
    assert satisfies(Refinement("part", part="handle"), start, start, "handle")
    assert not satisfies(Refinement("part", part="handle"), start, start, "rim")
    other = Refinement("object", object=1, name="bowl")
    assert satisfies(other, start, start, after_owner=1) and not satisfies(other, start, start, after_owner=0)


def test_rotate_turns_exactly_ninety_degrees_where_the_grasp_allows_it():
    block = pose(BLOCK[0])
    turned = target(Refinement("rotate"), block, 0, SCENE)
    assert (turned.x, turned.y) == (block.x, block.y)
    assert angle_difference(turned.theta, block.theta) == pytest.approx(math.pi / 2)
    # a handle grasp turned in place is no grasp: the nearest labelled grasp turned by >= 75° (the block's)
    handle = pose(BAR[0])
    fallback = target(Refinement("rotate"), handle, 0, SCENE)
    assert angle_difference(fallback.theta, handle.theta) >= math.radians(75)
    assert SCENE.valid(fallback, 0)


def test_side_moves_by_a_tenth_inside_the_criterion():
    start = pose(BAR[2])
    moved = target(Refinement("side", side="right"), start, 0, SCENE)
    assert moved.x - start.x == pytest.approx(SHIFT) and moved.y == start.y and SCENE.valid(moved, 0)
    assert target(Refinement("side", side="top"), start, 0, SCENE) is None  # nothing of the object above


def test_part_and_object_targets_are_the_most_central_grasp_of_what_is_named():
    start = pose(BLOCK[0])
    handle = target(Refinement("part", part="handle"), start, 0, SCENE)
    assert abs(handle.x - 0.60) <= 0.04 and SCENE.parts[SCENE.nearest(handle)] == "handle"  # the bar's middle
    bowl = target(Refinement("object", object=1, name="bowl"), start, 0, SCENE)
    assert SCENE.owners[SCENE.nearest(bowl)] == 1 and SCENE.valid(bowl, 1)


def test_targets_do_not_depend_on_the_labels_order():
    order = list(range(len(RECTS)))
    random.Random(3).shuffle(order)
    shuffled = SceneGrasps(
        tuple(RECTS[i] for i in order), SIZE, tuple(PARTS[i] for i in order), tuple(OWNERS[i] for i in order),
        SCENE.names,
    )  # fmt: skip
    for start, owner in ((pose(RIM[3]), 1), (pose(BAR[4]), 0), (pose(BLOCK[1]), 0)):
        for request in possible_requests(start, owner, SCENE):
            assert target(request, start, owner, SCENE) == target(request, start, owner, shuffled), request


def test_every_drawn_refinement_is_feasible_valid_and_well_inside_the_check():
    kinds = set()
    for seed in range(60):
        rng = random.Random(seed)
        k = rng.randrange(len(RECTS))
        start, owner = pose(RECTS[k]), OWNERS[k]
        request, after = draw_refinement(random.Random(seed), start, owner, SCENE)
        kinds.add(request.kind)
        meant = request.object if request.kind == "object" else owner
        near = SCENE.nearest(after)
        assert satisfies(request, start, after, SCENE.parts[near], SCENE.owners[near]), request
        assert SCENE.valid(after, meant), request
        if request.kind == "rotate":
            assert angle_difference(start.theta, after.theta) >= MIN_ROTATION + math.radians(15)
        assert draw_refinement(random.Random(seed), start, owner, SCENE) == (request, after)
    assert kinds == {"rotate", "side", "part", "object"}


def test_malformed_requests_are_refused():
    with pytest.raises(ValueError):
        Refinement("shake")
    with pytest.raises(ValueError):
        Refinement("side", side="north")
    with pytest.raises(ValueError):
        Refinement("part")
    with pytest.raises(ValueError):
        Refinement("object", object=1)  # unnamed
    with pytest.raises(ValueError):
        SceneGrasps((RECTS[0],), SIZE, ("a", "b"))
