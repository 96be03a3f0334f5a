"""The target check: a first pose (or a follow-up's that names another object) that lies off the object its
reasoning named moves onto the heads' best grasp of that object; a turned follow-up takes the heads' best turned
grasp on the held object; every other pose stays; a spatial instruction's object is the heads' instance leading the
relation. The rules on hand-made patch maps, then a real bundle's graph and session."""

import math
from dataclasses import replace

import numpy as np
import pytest

from appliance.bundle import TargetCheckSpec
from appliance.grasp import GraspPose
from appliance.runtime.objects import CategoryNames
from appliance.runtime.target import TargetCheck, footprints

CLASSES = ("knife", "mug", "ball")
TABLE = len(CLASSES)
GRID = 4
NAMES = CategoryNames({"knife": "knife", "mug": "mug", "coffee mug": "mug", "ball": "ball", "whisk": "whisk"})


def maps(labels: dict[tuple[int, int], str], best: dict[tuple[int, int], float] | None = None):
    """Identity probabilities with ``labels`` ((row, col) → category; the table elsewhere), and grasp values whose
    centre logits are ``best`` (0 elsewhere), offsets at the patch centre and θ = π/4."""
    identity = np.zeros((GRID * GRID, TABLE + 1), np.float32)
    identity[:, TABLE] = 1.0
    for (row, col), category in labels.items():
        identity[row * GRID + col] = 0.0
        identity[row * GRID + col, CLASSES.index(category)] = 1.0
    grasp = np.zeros((GRID * GRID, 5), np.float32)
    grasp[:, 1:3] = 0.5
    grasp[:, 3:5] = (0.0, 1.0)  # cos 2θ, sin 2θ: θ = π/4
    for (row, col), logit in (best or {}).items():
        grasp[row * GRID + col, 0] = logit
    return identity, grasp


def at(row: int, col: int, theta: float = 0.0) -> GraspPose:
    """A pose at the centre of a patch."""
    return GraspPose((col + 0.5) / GRID, (row + 0.5) / GRID, theta)


CHECK = TargetCheck(TargetCheckSpec(GRID, reach=1), CLASSES, NAMES)
KNIFE = "The one on the left is a knife, a long thin blade; hold it by the handle."


def test_a_pose_on_another_object_moves_to_the_best_grasp_of_the_one_named():
    identity, grasp = maps({(0, 0): "knife", (0, 1): "knife", (3, 3): "mug"}, best={(0, 1): 2.0, (3, 3): 9.0})
    moved = CHECK.moved(at(3, 3), KNIFE, identity, grasp)
    assert moved is not None
    assert (moved.x, moved.y) == pytest.approx(((1 + 0.5) / GRID, 0.5 / GRID))  # the knife's likelier patch
    assert moved.theta == pytest.approx(math.pi / 4)


def test_a_pose_on_the_object_named_stays():
    identity, grasp = maps({(0, 0): "knife", (3, 3): "mug"}, best={(3, 3): 9.0})
    assert CHECK.moved(at(0, 0), KNIFE, identity, grasp) is None
    assert CHECK.moved(at(3, 3), "It is a coffee mug, a cylinder with a handle.", identity, grasp) is None  # synonym


def test_a_pose_on_the_table_next_to_the_object_named_stays_within_reach():
    identity, grasp = maps({(0, 0): "knife", (3, 3): "mug"})
    assert CHECK.moved(at(1, 1), KNIFE, identity, grasp) is None  # the table, one patch diagonally from the knife
    assert CHECK.moved(at(2, 2), KNIFE, identity, grasp) is not None  # two patches away: moved
    strict = TargetCheck(TargetCheckSpec(GRID, reach=0), CLASSES, NAMES)
    assert strict.moved(at(1, 1), KNIFE, identity, grasp) is not None
    # on another object, reach does not help: (0, 1) is a mug right beside the knife
    identity, grasp = maps({(0, 0): "knife", (0, 1): "mug"})
    assert CHECK.moved(at(0, 1), KNIFE, identity, grasp) is not None


HEADS = TargetCheck(TargetCheckSpec(GRID, reach=1, pose="heads"), CLASSES, NAMES)


def test_with_the_heads_pose_a_pose_on_the_object_named_takes_the_heads_grasp_on_that_instance():
    # two mugs: one of patches (0, 0)-(0, 1), one of (3, 2)-(3, 3); the grasp heads like (3, 3) best of all
    identity, grasp = maps(
        {(0, 0): "mug", (0, 1): "mug", (3, 2): "mug", (3, 3): "mug"}, best={(0, 1): 2.0, (3, 3): 9.0, (0, 0): 1.0}
    )
    mug = "It is a mug, a cylinder with a handle."
    assert CHECK.moved(at(0, 0), mug, identity, grasp) is None  # the model's pose: kept
    on_first = HEADS.moved(at(0, 0), mug, identity, grasp)  # the heads' best grasp on the mug the pose is on
    assert on_first is not None and (on_first.x, on_first.y) == pytest.approx((1.5 / GRID, 0.5 / GRID))
    assert on_first.theta == pytest.approx(math.pi / 4)
    on_second = HEADS.moved(at(3, 2), mug, identity, grasp)
    assert (on_second.x, on_second.y) == pytest.approx((3.5 / GRID, 3.5 / GRID))
    beside = HEADS.moved(at(1, 0), mug, identity, grasp)  # the table just below the first mug: within reach
    assert (beside.x, beside.y) == pytest.approx((1.5 / GRID, 0.5 / GRID))
    # off every mug (on the table two patches away): the best mug grasp of all, as with the model's pose
    assert (HEADS.moved(at(2, 0), mug, identity, grasp).x, CHECK.moved(at(2, 0), mug, identity, grasp).x) == (
        pytest.approx(3.5 / GRID),
        pytest.approx(3.5 / GRID),
    )


def turning(angles: dict[tuple[int, int], float], best: dict[tuple[int, int], float]):
    """A mug over patches (1, 0)-(1, 3) and a ball at (3, 3); the grasp heads' angle per patch from ``angles``
    (π/4 elsewhere) and their logits from ``best``."""
    identity, grasp = maps({(1, 0): "mug", (1, 1): "mug", (1, 2): "mug", (1, 3): "mug", (3, 3): "ball"}, best)
    for (row, col), theta in angles.items():
        grasp[row * GRID + col, 3:5] = (math.cos(2 * theta), math.sin(2 * theta))
    return identity, grasp


def test_a_turned_pose_moves_to_the_heads_turned_grasp_on_the_same_object():
    # the mug's far patch is held across (π/2) by the heads; its others along (0); the ball's is likeliest of all
    identity, grasp = turning({(1, 0): 0.0, (1, 1): 0.0, (1, 2): 0.0, (1, 3): math.pi / 2}, {(1, 3): 1.0, (3, 3): 9})
    before = at(1, 0, 0.0)
    moved = HEADS.turned(before, at(1, 0, math.pi / 2), "mug", identity, grasp)  # turned where the heads say 0
    assert moved is not None and (moved.x, moved.y) == pytest.approx((3.5 / GRID, 1.5 / GRID))
    assert moved.theta == pytest.approx(math.pi / 2)
    # where the heads' grasp under the turned pose agrees with it, it still becomes the heads' (validation chose it)
    agreed = HEADS.turned(before, at(1, 3, math.pi / 2 - 0.3), "mug", identity, grasp)
    assert agreed is not None and (agreed.x, agreed.y, agreed.theta) == pytest.approx((moved.x, moved.y, moved.theta))


def test_a_rotation_the_reasoning_states_is_turned_even_where_the_model_kept_its_angle():
    identity, grasp = turning({(1, 0): 0.0, (1, 1): 0.0, (1, 2): 0.0, (1, 3): math.pi / 2}, {(1, 3): 1.0})
    before = at(1, 0, 0.0)
    assert HEADS.turned(before, at(1, 0, 0.1), "mug", identity, grasp) is None  # no rotation, nor said
    said = HEADS.turned(before, at(1, 0, 0.1), "mug", identity, grasp, said=True)
    assert said is not None and said.theta == pytest.approx(math.pi / 2) and said.x == pytest.approx(3.5 / GRID)
    from appliance.runtime.target import ROTATING

    assert ROTATING.search("Rotating the gripper by 90 degrees: -0.36 to 1.21.")
    assert not ROTATING.search("Moving the grasp to the left: y 0.40 to 0.30.")


def test_where_no_grasp_of_the_object_is_turned_75_degrees_one_turned_60_will_do():
    # the mug's likeliest turned patch is turned 65°, another 80° but less likely: the 80° one first
    identity, grasp = turning({(1, 0): 0.0, (1, 1): math.radians(65), (1, 2): math.radians(80), (1, 3): 0.0},
                              {(1, 1): 5.0, (1, 2): 1.0})  # fmt: skip
    before = at(1, 0, 0.0)
    first = HEADS.turned(before, at(1, 0, math.pi / 2), "mug", identity, grasp)
    assert first is not None and first.theta == pytest.approx(math.radians(80), abs=1e-5)
    grasp[1 * GRID + 2, 3:5] = (1.0, 0.0)  # no longer turned: the 65° one
    second = HEADS.turned(before, at(1, 0, math.pi / 2), "mug", identity, grasp)
    assert second is not None and second.theta == pytest.approx(math.radians(65), abs=1e-5)


def test_a_rotation_said_where_the_heads_show_no_turned_grasp_turns_the_pose_before_in_place():
    identity, grasp = turning({(1, 0): 0.0, (1, 1): 0.0, (1, 2): math.radians(50), (1, 3): 0.0}, {(1, 2): 9.0})
    before = at(1, 1, 0.3)
    turned = HEADS.turned(before, at(1, 0, 0.6), "mug", identity, grasp, said=True)  # the model turned it 0.3 rad
    assert turned is not None and (turned.x, turned.y) == pytest.approx((before.x, before.y))
    assert angle_close(turned.theta, 0.3 + math.pi / 2)
    assert HEADS.turned(before, at(1, 0, 0.6), "mug", identity, grasp) is None  # not said, not turned 60°: kept
    assert HEADS.turned(before, at(1, 0, 0.6), "whisk", identity, grasp, said=True) is None  # one the head lacks


def test_the_reasoning_states_the_turn_the_check_took():
    from appliance.answer import AnswerFormat, AnswerVariant
    from appliance.runtime.target import restate_turn

    angle = AnswerFormat(AnswerVariant.RT, decimals=2).render_angle
    said = "Rotating the gripper by 90 degrees: 0.30 to -0.30. Keep clear of the blade."
    assert restate_turn(said, angle(0.3), angle(0.3 + math.pi / 2)) == (
        "Rotating the gripper by 90 degrees: 0.30 to -1.27. Keep clear of the blade."  # wrapped as the pose is
    )
    # a turn that lands a hair below zero reads as the pose does, never "-0.00"
    assert restate_turn(said, angle(1.57), angle(1.57 + math.pi / 2)).startswith(
        "Rotating the gripper by 90 degrees: 1.57 to 0.00."
    )
    assert restate_turn("Rotated by 90 degrees: 1 to 2.", "0.000", "1.500") == "Rotated by 90 degrees: 0.000 to 1.500."
    for unstated in ("Rotating the gripper by 90 degrees.", "Moving the grasp to the left: y 0.40 to 0.30."):
        assert restate_turn(unstated, "0.30", "1.87") == unstated


def test_what_the_turn_check_cannot_judge_keeps_the_models_pose():
    identity, grasp = turning({(1, 0): 0.0, (1, 1): 0.0, (1, 2): 0.0, (1, 3): 0.0}, {(3, 3): 9.0})
    before = at(1, 0, 0.0)
    assert HEADS.turned(before, at(1, 0, 0.5), "mug", identity, grasp) is None  # turned under 60°: no rotation
    assert HEADS.turned(before, at(1, 0, math.pi / 2), "mug", identity, grasp) is None  # no patch of it turned
    assert HEADS.turned(before, at(1, 0, math.pi / 2), None, identity, grasp) is None  # no object named
    assert HEADS.turned(before, at(1, 0, math.pi / 2), "whisk", identity, grasp) is None  # one the head lacks
    assert HEADS.turned(at(3, 0, 0.0), at(3, 0, math.pi / 2), "mug", identity, grasp) is None  # before: on no mug


PART_CLASSES = ("body", "handle", "rim")
PARTS = TargetCheck(
    TargetCheckSpec(GRID, reach=1, pose="heads", parts="patch_parts", part_classes=PART_CLASSES,
                    category_parts={"mug": ("handle", "rim")}),
    CLASSES,
    NAMES,
)  # fmt: skip


def part_maps(parts: dict[tuple[int, int], tuple[str, ...]]):
    """The mug and ball of ``turning`` (heads' logits: the mug's (1, 3) 1.0, (1, 2) 0.5, the ball's 9), and a part map
    that gives each patch of ``parts`` its parts (probability 0.9); every other patch "body" (a part the mug is not
    held by)."""
    identity, grasp = turning({}, {(1, 3): 1.0, (1, 2): 0.5, (3, 3): 9.0})
    probs = np.full((GRID * GRID, len(PART_CLASSES)), 0.1, np.float32)
    probs[:, PART_CLASSES.index("body")] = 0.9
    for (row, col), names in parts.items():
        for name in names:
            probs[row * GRID + col, PART_CLASSES.index(name)] = 0.9
    return identity, grasp, probs


def test_the_part_a_follow_ups_reasoning_moves_to_is_one_of_the_held_objects_parts():
    assert PARTS.part("Moving the grasp to the handle of the mug.", "mug") == "handle"
    assert PARTS.part("Moving the grasp to the Rim of the mug, not the handle.", "mug") == "rim"  # the first named
    assert PARTS.part("Moving the grasp to the body of the mug.", "mug") is None  # not a part it is held by
    assert PARTS.part("Moving the grasp to the handle of the knife.", "knife") is None  # one part: nothing to choose
    assert PARTS.part("Moving the grasp to the left: y 0.41 to 0.31.", "mug") is None
    assert PARTS.part("Moving the grasp to the handle of the mug.", None) is None
    assert CHECK.part("Moving the grasp to the handle of the mug.", "mug") is None  # no part map in the bundle


def test_a_part_follow_up_moves_to_the_heads_best_grasp_on_that_part_of_the_held_object():
    identity, grasp, probs = part_maps(
        {(1, 0): ("handle",), (1, 1): ("handle", "rim"), (1, 2): ("rim",), (1, 3): ("rim",)}
    )
    before = at(1, 3)  # held by the rim
    grasp[1 * GRID + 1, 0] = 0.2  # the patch where handle and rim meet: likelier than the handle's own (0)
    moved = PARTS.on_part(before, at(1, 2), "mug", "handle", identity, grasp, probs)  # the model stayed on the rim
    assert moved is not None and (moved.x, moved.y) == pytest.approx((0.5 / GRID, 1.5 / GRID))  # the handle alone
    assert PARTS.on_part(before, at(1, 0, 0.3), "mug", "handle", identity, grasp, probs) is None  # on the handle: kept
    # on the patch of both parts: moved to the one of the handle alone, whose grasp is the handle's
    assert PARTS.on_part(before, at(1, 1), "mug", "handle", identity, grasp, probs) == moved
    # where the part shows only beside another one, the heads' best grasp among those patches
    identity, grasp, probs = part_maps({(1, 0): ("handle", "rim"), (1, 1): ("handle", "rim"), (1, 3): ("rim",)})
    grasp[1 * GRID + 1, 0] = 0.2
    mixed = PARTS.on_part(before, at(1, 3), "mug", "handle", identity, grasp, probs)
    assert mixed is not None and (mixed.x, mixed.y) == pytest.approx((1.5 / GRID, 1.5 / GRID))
    identity, grasp, probs = part_maps(
        {(1, 0): ("handle",), (1, 1): ("handle", "rim"), (1, 2): ("rim",), (1, 3): ("rim",)}
    )
    back = PARTS.on_part(at(1, 0), at(1, 0), "mug", "rim", identity, grasp, probs)  # to the rim: its best patch
    assert back is not None and (back.x, back.y) == pytest.approx((3.5 / GRID, 1.5 / GRID))


def test_with_the_part_heads_placements_the_pose_is_the_parts_own_grasp_in_its_patch():
    identity, grasp, probs = part_maps({(1, 0): ("handle", "rim"), (1, 1): ("handle", "rim"), (1, 3): ("rim",)})
    grasp[1 * GRID + 0, 0] = 0.2  # the likelier of the two patches that show the handle: row 1, column 0
    place = np.zeros((GRID * GRID, len(PART_CLASSES), 4), np.float32)
    place[..., 2] = 1.0  # every part's grasp along x, in the patch's corner
    handle = PART_CLASSES.index("handle")
    place[1 * GRID + 0, handle] = (0.9, 0.2, math.cos(2 * 1.2), math.sin(2 * 1.2))  # where the handle's grasp is
    before = at(1, 3)  # held by the rim
    spec = replace(PARTS.spec, part_grasp="patch_part_grasp")
    placed = TargetCheck(spec, CLASSES, NAMES)
    moved = placed.on_part(before, at(1, 3), "mug", "handle", identity, grasp, probs, place)
    assert moved is not None and (moved.x, moved.y) == pytest.approx((0.9 / GRID, 1.2 / GRID))
    assert moved.theta == pytest.approx(1.2, abs=1e-5)
    # without placements: the grasp heads' candidate in the same patch (its centre here)
    heads = placed.on_part(before, at(1, 3), "mug", "handle", identity, grasp, probs)
    assert heads is not None and (heads.x, heads.y) == pytest.approx((0.5 / GRID, 1.5 / GRID))
    # a pose already on a patch of the part alone is kept, placements or not
    identity, grasp, probs = part_maps({(1, 0): ("handle",), (1, 3): ("rim",)})
    assert placed.on_part(before, at(1, 0), "mug", "handle", identity, grasp, probs, place) is None
    placed.check_shapes(identity.shape, grasp.shape, probs.shape, None, place.shape)
    with pytest.raises(ValueError, match="placements"):
        placed.check_shapes(identity.shape, grasp.shape, probs.shape, None, place[..., :2].shape)
    with pytest.raises(ValueError, match="need parts"):
        TargetCheckSpec(GRID, part_grasp="patch_part_grasp")


def test_what_the_part_check_cannot_judge_keeps_the_models_pose():
    identity, grasp, probs = part_maps({(1, 1): ("rim",), (1, 2): ("rim",), (1, 3): ("rim",)})  # no handle shown
    assert PARTS.on_part(at(1, 3), at(1, 2), "mug", "handle", identity, grasp, probs) is None
    identity, grasp, probs = part_maps({(1, 0): ("handle",)})
    assert PARTS.on_part(at(3, 0), at(1, 2), "mug", "handle", identity, grasp, probs) is None  # before: on no mug


def test_patches_joined_side_by_side_are_one_object():
    from appliance.runtime.target import joined

    shown = np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 1, 0, 1], [1, 0, 0, 1]], bool)
    seed = np.zeros_like(shown)
    seed[0, 0] = True
    assert joined(shown, seed).tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]  # not diagonally
    seed[3, 3] = True
    assert joined(shown, seed)[1:, 3].all() and not joined(shown, seed)[3, 0]
    assert not joined(shown, np.zeros_like(shown)).any()


def test_what_the_check_cannot_judge_keeps_the_models_pose():
    identity, grasp = maps({(0, 0): "knife", (3, 3): "mug"})
    pose = at(3, 3)
    assert CHECK.moved(pose, "The one on the left is a ball, a sphere.", identity, grasp) is None  # no ball shown
    assert CHECK.moved(pose, "It is a whisk, wires on a handle.", identity, grasp) is None  # a category the head lacks
    assert CHECK.moved(pose, "A long thin thing; hold it in the middle.", identity, grasp) is None  # no name
    assert CHECK.moved(GraspPose(1.0, 1.0, 0.0), "It is a mug.", identity, grasp) is None  # the edge is the last patch
    for reasoning in ("The one on the left is a ball, a sphere.", "It is a whisk.", "A long thin thing."):
        assert HEADS.moved(pose, reasoning, identity, grasp) is None  # nor do the heads have a grasp to offer


def test_the_maps_must_be_the_manifests_shape():
    identity, grasp = maps({})
    CHECK.check_shapes(identity.shape, grasp.shape)
    with pytest.raises(ValueError, match="expects"):
        CHECK.check_shapes(identity[:, :-1].shape, grasp.shape)
    with pytest.raises(ValueError, match="expects"):
        CHECK.check_shapes(identity.shape, grasp[:8].shape)
    _, _, probs = part_maps({})
    PARTS.check_shapes(identity.shape, grasp.shape, probs.shape)
    with pytest.raises(ValueError, match="part check expects"):
        PARTS.check_shapes(identity.shape, grasp.shape, probs[:, :2].shape)
    with pytest.raises(ValueError, match="part check expects"):
        PARTS.check_shapes(identity.shape, grasp.shape, None)
    COLOURED.check_shapes(identity.shape, grasp.shape, None, (GRID * GRID, 3))  # red, blue, no word
    with pytest.raises(ValueError, match="colour words expect"):
        COLOURED.check_shapes(identity.shape, grasp.shape, None, (GRID * GRID, 2))
    with pytest.raises(ValueError, match="colour words expect"):
        COLOURED.check_shapes(identity.shape, grasp.shape)


LEADS = {
    "left": "The one on the left is {a_name}.",
    "right": "The one on the right is {a_name}.",
    "near": "The one nearest the robot is {a_name}.",
    "far": "The one farthest from the robot is {a_name}.",
}
A_NAMES = {"knife": "a knife", "mug": "a mug", "ball": "a ball"}
SPATIAL = TargetCheck(TargetCheckSpec(GRID, reach=1, pose="heads", leads=LEADS, a_names=A_NAMES), CLASSES, NAMES)


@pytest.mark.parametrize(
    ("instruction", "relation"),
    [
        ("pick up the mug on the left", "left"),
        ("I want the object to the left.", "left"),
        ("grab the leftmost cup", "left"),
        ("Grasp the bowl on the robot's right.", "right"),
        ("hand me the ball nearest the robot", "near"),
        ("the knife closest to the robot, please", "near"),
        ("grab the object farthest away from the robot please", "far"),
        ("the one furthest from the robot", "far"),
        ("pick up the mug", None),
        ("hand me something to cut with", None),
        ("the mug on the left, nearest the robot", None),  # two relations: not one we resolve
        ("the cup closest to me", "near"),
        ("the right-most cup", "right"),
        ("hand me the knife right now", None),  # a bare word is no place
        ("all right, pick up the bowl", None),
        ("grab the right tool to cut with", None),
        ("pass me the left-handed scissors", None),
        ("what is left on the table? the mug", None),
        ("the cup closest to the bowl", None),  # a place relative to another object: not resolved here
        ("the cup to the left of the bowl", None),
    ],
)
def test_the_relation_an_instruction_asks_by(instruction, relation):
    from appliance.runtime.target import relation as relation_of

    assert relation_of(instruction) == relation


def test_every_place_phrase_the_training_data_asks_by_reads_as_its_relation():
    from appliance.runtime.target import relation
    from training.reasoning.referring import load_referring

    where = load_referring().where
    for name, phrases in where.items():
        for phrase in phrases["train"] + phrases["test"]:
            for frame in ("pick up the mug {w}", "I want the object {w}.", "grab the bowl {w} please"):
                assert relation(frame.format(w=phrase)) == name, (phrase, frame)


# a knife of two patches on the left (row 0), a mug in the middle, and two balls: one near (column 0), one far
TABLE_OF_FOUR = {(0, 1): "knife", (0, 2): "knife", (2, 2): "mug", (3, 0): "ball", (1, 3): "ball"}


def test_a_spatial_instruction_resolves_to_the_instance_leading_its_relation():
    identity, _ = maps(TABLE_OF_FOUR)
    left = SPATIAL.referent("I want the object to the left.", identity)
    assert left.relation == "left" and left.category == "knife"  # every category: the knife's row is the top one
    assert np.argwhere(left.patches).tolist() == [[0, 1], [0, 2]]
    near = SPATIAL.referent("hand me the ball nearest the robot", identity)
    assert near.category == "ball" and np.argwhere(near.patches).tolist() == [[3, 0]]  # column 0: nearest
    far = SPATIAL.referent("grab the ball farthest away from the robot please", identity)
    assert np.argwhere(far.patches).tolist() == [[1, 3]]
    right = SPATIAL.referent("Grasp the object on the right.", identity)
    assert right.category == "ball" and np.argwhere(right.patches).tolist() == [[3, 0]]  # the bottom row: right
    assert SPATIAL.lead(left) == "The one on the left is a knife."
    assert SPATIAL.lead(near) == "The one nearest the robot is a ball."
    # asked by a use: among the objects its hint names that the head shows, the whole table when it shows none
    thing = SPATIAL.referent("something to roll on the left", identity, hint=("a ball", "a whisk"))
    assert thing.category == "ball" and np.argwhere(thing.patches).tolist() == [[1, 3]]  # the upper ball
    assert SPATIAL.referent("something to roll on the left", identity, hint=("a whisk",)).category == "knife"
    assert SPATIAL.referent("the knife on the left", identity, hint=("a ball",)).category == "knife"  # named: kept


def test_a_spatial_referent_gets_the_heads_best_grasp_on_it_or_the_models_pose_on_it():
    identity, grasp = maps(TABLE_OF_FOUR, best={(0, 2): 3.0, (0, 1): 1.0, (2, 2): 9.0})
    left = SPATIAL.referent("pick up the object on the left", identity)
    pose = SPATIAL.on_referent(at(2, 2), left, identity, grasp)  # the model chose the mug
    assert (pose.x, pose.y) == pytest.approx((2.5 / GRID, 0.5 / GRID))  # the knife's likelier patch
    model_pose = TargetCheck(replace(SPATIAL.spec, pose="model"), CLASSES, NAMES)
    assert model_pose.on_referent(at(0, 1, 0.3), left, identity, grasp) == at(0, 1, 0.3)  # on it: kept
    assert model_pose.on_referent(at(2, 2), left, identity, grasp) == pose  # off it: the heads' grasp


def test_what_the_spatial_check_cannot_resolve_is_left_to_the_model():
    identity, _ = maps(TABLE_OF_FOUR)
    assert SPATIAL.referent("pick up the knife", identity) is None  # no relation
    # a noun the vocabulary lacks is no category: the relation alone decides, over every object
    assert SPATIAL.referent("the gizmo on the left", identity).category == "knife"
    assert SPATIAL.referent("the whisk on the left", identity) is None  # a category the head lacks
    assert SPATIAL.referent("the object on the left", maps({})[0]) is None  # nothing on the table
    assert CHECK.referent("the object on the left", identity) is None  # a spec without leads (older bundles)
    only_left = TargetCheck(replace(SPATIAL.spec, leads={"left": LEADS["left"]}), CLASSES, NAMES)
    assert only_left.referent("the object nearest the robot", identity) is None


COLOURED = TargetCheck(TargetCheckSpec(GRID, reach=1, colour="patch_colour", colours=("red", "blue")), CLASSES, NAMES)
# two mugs: one of three patches on the top row, one of a single patch in the bottom right corner; a knife
TWO_MUGS = {(0, 0): "mug", (0, 1): "mug", (0, 2): "mug", (3, 3): "mug", (2, 0): "knife"}


def colours(words: dict[tuple[int, int], str]):
    """A colour map (red, blue, no word) giving each patch of ``words`` its word, every other patch none."""
    colour = np.zeros((GRID * GRID, 3), np.float32)
    colour[:, 2] = 1.0
    for (row, col), word in words.items():
        colour[row * GRID + col] = 0.0
        colour[row * GRID + col, ("red", "blue").index(word)] = 1.0
    return colour


def test_an_object_told_from_its_twins_by_colour_is_the_instance_that_fits():
    identity, grasp = maps(TWO_MUGS, best={(0, 1): 5.0, (3, 3): 1.0})
    colour = colours({(0, 0): "blue", (0, 1): "blue", (0, 2): "blue", (3, 3): "red"})
    red = COLOURED.referent("I want the red mug.", identity, colour=colour)
    assert red.relation is None and red.category == "mug" and red.word == "red" and red.why == "red"
    assert np.argwhere(red.patches).tolist() == [[3, 3]]
    assert COLOURED.lead(red) == ""  # the model's own answer names the colour: "The red one is a mug."
    pose = COLOURED.on_referent(at(0, 1), red, identity, grasp)  # the model chose the blue mug
    assert (pose.x, pose.y) == pytest.approx((3.5 / GRID, 3.5 / GRID))
    blue = COLOURED.referent("grab the blue coffee mug please", identity, colour=colour)  # a synonym
    assert np.argwhere(blue.patches).tolist() == [[0, 0], [0, 1], [0, 2]]
    assert np.argwhere(red.fits).tolist() == [[3, 3]]  # the blue mug does not fit "red" at all
    # a long object the head splits in two groups, both of the colour asked for: the model's pose picks the group
    split, grasp = maps({(0, 0): "knife", (0, 1): "knife", (0, 3): "knife"}, best={(0, 0): 2.0, (0, 3): 1.0})
    pinkish = colours({(0, 0): "red", (0, 1): "red"})
    pinkish[3] = (0.55, 0.0, 0.45)  # the tip: red at 0.55, half the best group's 1.0 or more
    knife = COLOURED.referent("the red knife", split, colour=pinkish)
    assert np.argwhere(knife.patches).tolist() == [[0, 0], [0, 1]] and knife.fits[0, 3]
    tip = COLOURED.on_referent(at(0, 3), knife, split, grasp)
    assert (tip.x, tip.y) == pytest.approx((3.5 / GRID, 0.5 / GRID))  # kept on the tip's group
    off = COLOURED.on_referent(at(3, 0), knife, split, grasp)  # on the table, far from both: the best group
    assert (off.x, off.y) == pytest.approx((0.5 / GRID, 0.5 / GRID))
    model_pose = TargetCheck(replace(COLOURED.spec, pose="model"), CLASSES, NAMES)
    assert model_pose.on_referent(at(0, 3, 0.2), knife, split, grasp) == at(0, 3, 0.2)  # on a group that fits: kept
    assert model_pose.on_referent(at(3, 0), knife, split, grasp) == off
    # a relation the spec has no lead for leaves the colour to decide
    assert COLOURED.referent("the red mug on the left", identity, colour=colour).word == "red"
    # one instance (a single mug, or two that touch) is left to the target check, whatever colours its patches get
    touching, _ = maps({(1, 1): "mug", (1, 2): "mug", (1, 3): "mug"})
    assert COLOURED.referent("the red mug", touching, colour=colours({(1, 2): "red", (1, 3): "blue"})) is None


def test_what_the_colour_check_cannot_tell_apart_is_left_to_the_model():
    identity, _ = maps(TWO_MUGS)
    colour = colours({(0, 0): "blue", (0, 1): "blue", (0, 2): "blue", (3, 3): "red"})
    assert COLOURED.referent("pick up the mug", identity, colour=colour) is None  # no colour or size
    assert COLOURED.referent("I want the red mug.", identity) is None  # no colour map (older bundles)
    assert CHECK.referent("I want the red mug.", identity, colour=colour) is None  # no colour words in the spec
    assert COLOURED.referent("I want the green mug.", identity, colour=colour) is None  # a word the head lacks
    assert COLOURED.referent("the red knife", identity, colour=colour) is None  # one knife, all of it: the name's check
    assert COLOURED.referent("the larger mug", identity, colour=colour) is None  # size, and no view to measure it
    nowhere = colours({(0, 0): "blue", (0, 1): "blue", (0, 2): "blue"})  # red likeliest on no patch of either mug
    nowhere[15] = (0.3, 0.0, 0.7)
    assert COLOURED.referent("I want the red mug.", identity, colour=nowhere) is None
    assert COLOURED.referent("I want the red mug.", identity, colour=np.full_like(colour, np.nan)) is None
    assert COLOURED.referent("the red whisk", identity, colour=colour) is None  # a category the head lacks
    assert COLOURED.referent("something red to drink from", identity, colour=colour) is None  # no name asked for


def test_the_words_before_the_name_an_instruction_asks_for():
    assert NAMES.attributes("grab the smaller red mug please") == ("smaller", "red")
    assert NAMES.attributes("pick up the mug") == ()
    assert NAMES.attributes("hand me something to cut with") == ()


def test_of_several_hinted_objects_those_the_head_shows_are_kept():
    identity, _ = maps({(0, 0): "knife", (3, 3): "mug"})
    assert SPATIAL.shown(["a knife", "a pair of scissors"], identity) == ["a knife"]
    assert SPATIAL.shown(["a coffee mug", "a cup", "a ball"], identity) == ["a coffee mug"]  # a synonym
    assert SPATIAL.shown(["a whisk", "a ball"], identity) == []  # a category the head lacks, one it does not see


def test_a_request_by_use_whose_hint_names_one_object_the_head_sees_opens_with_it():
    used = TargetCheck(replace(SPATIAL.spec, leads={**LEADS, "use": "{A_name} is"}), CLASSES, NAMES)
    identity, _ = maps({(0, 0): "knife", (3, 3): "mug"})
    assert used.use_lead("hand me something to cut with", identity, ("a knife",)) == "A knife is"
    assert used.use_lead("something to drink from", identity, ("a coffee mug",)) == "A mug is"  # the article's own
    assert used.use_lead("hand me something to cut with", identity, ("a knife", "a mug")) == ""  # two: the model's
    assert used.use_lead("hand me something to cut with", identity, ()) == ""
    assert used.use_lead("something to play with", identity, ("a ball",)) == ""  # the head sees no ball
    assert used.use_lead("something to play with", identity, ("a whisk",)) == ""  # nor knows a whisk
    assert used.use_lead("pick up the mug to cut with", identity, ("a knife",)) == ""  # it names its object
    assert used.use_lead("give me mug to cut with", identity, ("a knife",)) == ""  # without a determiner too
    assert used.use_lead("give me knife to cut with", identity, ("a knife",)) == "A knife is"  # the one hinted
    assert used.use_lead("something to stir a mug with", identity, ("a knife",)) == "A knife is"  # the use's words
    assert SPATIAL.use_lead("hand me something to cut with", identity, ("a knife",)) == ""  # a bundle without it


def test_an_instruction_naming_nothing_opens_with_the_one_object_the_heads_see():
    only = TargetCheck(replace(SPATIAL.spec, leads={**LEADS, "only": "The image shows {a_name}."}), CLASSES, NAMES)
    one, _ = maps({(1, 1): "knife", (1, 2): "knife", (2, 2): "mug"})  # one object, its patches mostly a knife's
    assert only.only_lead("Lift the object.", one, ()) == "The image shows a knife."
    assert only.only_lead("Give me a grasp pose.", one, ()) == "The image shows a knife."
    assert only.only_lead("pick up the mug", one, ()) == ""  # it names one
    assert only.only_lead("pass me mug", one, ()) == ""  # without a determiner too
    assert only.only_lead("Lift the object.", one, ("a knife",)) == ""  # a use: the use lead's
    assert only.only_lead("Lift the object on the left.", one, ()) == ""  # a place: the spatial check's
    two, _ = maps({(0, 0): "knife", (3, 3): "mug"})
    assert only.only_lead("Lift the object.", two, ()) == ""  # two objects: which is the model's to say
    none, _ = maps({})
    assert only.only_lead("Lift the object.", none, ()) == ""
    assert SPATIAL.only_lead("Lift the object.", one, ()) == ""  # a bundle without it


def test_instances_are_the_groups_of_patches_sharing_sides():
    from appliance.runtime.target import instances

    shown = np.array([[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]], bool)
    groups = instances(shown)
    assert sorted(np.argwhere(g).tolist() for g in groups) == [[[0, 0], [0, 1], [1, 1]], [[1, 3], [2, 3]], [[3, 0]]]
    assert instances(np.zeros_like(shown)) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"grid": 0}, "grid must be >= 1"),
        ({"grid": 4, "reach": 4}, "reach must be in 0..3"),
        ({"grid": 4, "pose": "cnn"}, "pose must be one of model, heads, got 'cnn'"),
        ({"grid": 4, "leads": {"above": "The one above is {a_name}."}, "a_names": A_NAMES}, "unknown lead 'above'"),
        ({"grid": 4, "leads": {"left": "The one on the left."}, "a_names": A_NAMES}, "a single {a_name} field"),
        ({"grid": 4, "leads": {"left": "It is {a_name} [0.5"}, "a_names": A_NAMES}, "no '\\['"),
        ({"grid": 4, "leads": {"left": "The {name} is {a_name}."}, "a_names": A_NAMES}, "a single {a_name} field"),
        ({"grid": 4, "leads": LEADS}, "leads need a_names"),
        ({"grid": 4, "leads": {"use": "{a_name} is"}, "a_names": A_NAMES}, "leads.use: .* a single {A_name} field"),
        ({"grid": 4, "leads": {"only": "It is {A_name}."}, "a_names": A_NAMES}, "leads.only: .* a single {a_name}"),
        ({"grid": 4, "leads": {"use": "{A_name} is {A_name}"}, "a_names": A_NAMES}, "a single {A_name} field"),
        ({"grid": 4, "leads": {"left": "The one } is {a_name}."}, "a_names": A_NAMES}, "a single {a_name} field"),
        ({"grid": 4, "leads": {"left": "The one\nis {a_name}."}, "a_names": A_NAMES}, "a single {a_name} field"),
        ({"grid": 4, "leads": LEADS, "a_names": {"mug": ""}}, "a_names.mug: a name with its article"),
        ({"grid": 4, "leads": LEADS, "a_names": {"mug": "a [mug"}}, "a_names.mug"),
        ({"grid": 4, "parts": "patch_parts"}, "part_classes: the part head's distinct classes"),
        ({"grid": 4, "parts": "patch_parts", "part_classes": ["rim", "rim"]}, "distinct classes"),
        (
            {"grid": 4, "parts": "p", "part_classes": ["rim"], "category_parts": {"mug": ["handle"]}},
            "'handle' is not in",
        ),
        ({"grid": 4, "part_classes": ["rim"]}, "need parts"),
        ({"grid": 4, "colour": "patch_colour"}, "colours: the colour head's distinct lower-case words"),
        ({"grid": 4, "colours": ["red"]}, "with colour and only then"),
        ({"grid": 4, "colour": "c", "colours": ["red", "red"]}, "distinct"),
        ({"grid": 4, "colour": "c", "colours": ["Red"]}, "lower-case"),
    ],
)
def test_bad_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        TargetCheckSpec(**spec)


# --- a real bundle: the graph's maps, and a session whose first answer is moved ---


@pytest.fixture(scope="module")
def target_bundle(refusing_checkpoint, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    import shutil

    from export.quantize import build_bundle
    from tests.appliance.runtime.test_presence import write_heads

    root = tmp_path_factory.mktemp("target")
    heads = root / "vision"
    shutil.copytree(refusing_checkpoint, heads)
    write_heads(heads)  # the identity head sees a mug on every patch; the grasp heads are random
    manifest = build_bundle(
        refusing_checkpoint, root / "bundle", bits=8, progress=False, heads=heads, target_check=True
    )
    assert manifest.target_check is not None and manifest.target_check.grid == 8 and manifest.target_check.reach == 1
    assert manifest.metrics["target_check_max_error"] <= 1e-4  # the graph's maps are the heads' own arithmetic
    return root / "bundle"


@pytest.fixture()
def model(target_bundle):
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel

    model = GraspModel.load(target_bundle, llama=LlamaSettings(n_ctx=512, n_batch=64))
    yield model
    model.llm.close()


def camera(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (480, 640, 3), dtype=np.uint8)


def test_the_graph_gives_each_patchs_identity_and_grasp(model):
    embedded = model.embed(camera())
    classes = model.manifest.presence.classes
    assert embedded.identity.shape == (64, len(classes) + 1) and embedded.grasp.shape == (64, 5)
    assert np.allclose(embedded.identity.sum(-1), 1.0, atol=1e-5)
    assert set(embedded.identity.argmax(-1)) == {classes.index("mug")}
    assert np.all((embedded.grasp[:, 1:] >= -1) & (embedded.grasp[:, 1:] <= 1))
    from training.stages import COLOURS

    spec = model.target.spec  # the vision stage's colour head: its map and words
    assert spec.colour == "patch_colour" and spec.colours == COLOURS and embedded.colour.shape == (64, len(COLOURS) + 1)
    assert np.allclose(embedded.colour.sum(-1), 1.0, atol=1e-5)
    assert model.manifest.metrics["colour_max_error"] <= 1e-4  # the head's own arithmetic


def scripted(model, text: str):
    """The model's next answer is ``text`` (its tokens as the bundle's tokenizer makes them), evaluated into the cache
    as decoding leaves it (all but the last token); later answers are its own."""
    real = model.generate

    def generate(*args, **kwargs):
        model.generate = real
        tokens = model.llm.tokenize(" " + text, add_bos=False, special=False)
        model.llm.eval_tokens(tokens[:-1])
        return tokens, text, tokens[-1:]

    model.generate = generate


def with_knife(model, image):
    """The image's maps, but the head sees a knife on patch (0, 0) and the mug everywhere else; the grasp heads
    like patch (0, 0) best of all."""
    embedded = model.embed(image)
    classes = model.manifest.presence.classes
    identity = np.zeros_like(embedded.identity)
    identity[:, classes.index("mug")] = 1.0
    identity[0] = 0.0
    identity[0, classes.index("knife")] = 1.0
    grasp = embedded.grasp.copy()
    grasp[0, 0] = grasp[:, 0].max() + 1.0
    return embedded._replace(identity=identity, grasp=grasp)


def test_a_first_pose_off_the_object_named_is_moved_and_the_conversation_goes_on_from_it(model):
    image = camera()
    embedded = with_knife(model, image)
    model.embed = lambda _image: embedded
    session = model.session()
    scripted(model, "It is a knife, a long thin blade. [0.90, 0.90], 0.00")  # on a mug's patch
    first = session.ask("hand me something to cut with", image)
    assert first.written == GraspPose(0.9, 0.9, 0.0)
    from appliance.daemon.jobs import prediction_fields

    assert prediction_fields(first)["written"] == {"x": 0.9, "y": 0.9, "theta": 0.0}  # what the reply carries
    assert first.pose != first.written and first.pose.x < 1 / 8 and first.pose.y < 1 / 8  # on the knife's patch
    assert first.text == model.format.render(first.pose, first.reasoning) and first.reasoning.startswith(
        "It is a knife"
    )
    assert session.history[-2] == []  # the cache gave back the model's answer: the moved one is evaluated next
    assert model.llm.n_past == sum(len(segment) for segment in session.history[:-1])
    before = [list(s) if isinstance(s, list) else s for s in session.history]
    follow = session.ask("rotate the gripper by 90 degrees")  # decoded on the cache the check left
    # the same conversation evaluated from nothing: the same greedy answer, so the cache held what the history says
    fresh = model.session()
    fresh.history, fresh.turns, fresh._image = before, [first], session._image
    model._active = None
    assert fresh.ask("rotate the gripper by 90 degrees").text == follow.text
    moved = model.llm.tokenize(" " + first.text, add_bos=False, special=False) + [model.llm.eos]
    assert any(isinstance(segment, list) and segment == moved for segment in session.history)
    # a follow-up naming another object is checked as a first answer is: onto the mug the heads like best
    scripted(model, "Switching to the mug. It is a mug, a cylinder with a handle. [0.06, 0.06], 0.00")
    switched = session.ask("no, the mug instead")
    assert switched.written == GraspPose(0.06, 0.06, 0.0)
    assert not (switched.pose.x < 1 / 8 and switched.pose.y < 1 / 8)  # off the knife's patch, onto a mug
    # one naming the same object again (another part of it), not turned: the model's pose stays
    theta = f"{switched.pose.theta:.2f}"
    scripted(model, f"Moving the grasp to the handle of the mug. [0.90, 0.90], {theta}")
    part = session.ask("grasp it by the handle instead")
    assert part.written is None and (part.pose.x, part.pose.y) == (0.9, 0.9)


def test_a_first_pose_on_the_object_named_stays_and_the_check_can_be_left_off(model, target_bundle):
    image = camera()
    embedded = with_knife(model, image)
    model.embed = lambda _image: embedded
    scripted(model, "It is a knife, a long thin blade. [0.06, 0.06], 0.00")  # on the knife's patch
    kept = model.session().ask("hand me something to cut with", image)
    assert kept.written is None and kept.pose == GraspPose(0.06, 0.06, 0.0)

    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel

    off = GraspModel.load(target_bundle, llama=LlamaSettings(n_ctx=512, n_batch=64), target_check=False)
    try:
        assert off.target is None
        off.embed = lambda _image: embedded
        scripted(off, "It is a knife, a long thin blade. [0.90, 0.90], 0.00")
        assert off.session().ask("hand me something to cut with", image).written is None
    finally:
        off.llm.close()


def test_a_bundle_with_the_heads_pose_gives_the_heads_grasp_on_the_object_named(model):

    image = camera()
    embedded = with_knife(model, image)
    model.embed = lambda _image: embedded
    model.target = TargetCheck(replace(model.target.spec, pose="heads"), model.target.index, model.target.names)
    scripted(model, "It is a knife, a long thin blade. [0.06, 0.06], 0.00")  # on the knife's patch
    first = model.session().ask("hand me something to cut with", image)
    assert first.written == GraspPose(0.06, 0.06, 0.0)
    fields = embedded.grasp[0]  # the knife's one patch: its offsets and angle
    want = GraspPose(float(fields[1]) / 8, float(fields[2]) / 8, math.atan2(float(fields[4]), float(fields[3])) / 2)
    assert (first.pose.x, first.pose.y, first.pose.theta) == pytest.approx((want.x, want.y, want.theta), abs=0.006)


def test_a_spatial_instruction_opens_the_answer_with_the_instance_found_and_grasps_that_one(model, target_bundle):
    """Real decoding under the lead's grammar: the answer names the instance the relation picks, whatever the tiny
    model would have written, and the pose lands on it. The export wrote the training data's own sentences."""
    from training.reasoning.referring import RELATIONS, resolution

    leads = model.target.spec.leads
    spatial = {r: resolution("spatial", "{a_name}", {"relation": r}) for r in RELATIONS}
    assert leads == {**spatial, "use": "{A_name} is", "only": "The image shows {a_name}."}
    assert model.target.spec.a_names["mug"] == "a mug" and model.target.spec.a_names["apple"] == "an apple"
    image = camera()
    embedded = model.embed(image)
    classes = model.manifest.presence.classes
    identity = np.zeros_like(embedded.identity)
    identity[:, len(classes)] = 1.0  # the table, but for two mugs: top left (rows 0-1) and bottom right (row 7)
    for k in (0, 1, 8, 62, 63):
        identity[k] = 0.0
        identity[k, classes.index("mug")] = 1.0
    model.embed = lambda _image: embedded._replace(identity=identity)
    first = model.session().ask("I want the mug to the right.", image)
    assert first.reasoning.startswith("The one on the right is a mug.")
    assert first.pose is not None and first.pose.y >= 7 / 8 and first.pose.x >= 6 / 8  # on the bottom right mug
    left = model.session().ask("pick up the mug on the left", image)
    assert left.reasoning.startswith("The one on the left is a mug.") and left.pose.y < 2 / 8 and left.pose.x < 2 / 8
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel

    off = GraspModel.load(target_bundle, llama=LlamaSettings(n_ctx=512, n_batch=64), target_check=False)
    try:  # without the check nothing leads the answer
        off.embed = model.embed
        assert not off.session().ask("I want the mug to the right.", image).reasoning.startswith("The one on")
    finally:
        off.llm.close()


def test_an_instruction_that_tells_twins_apart_by_colour_grasps_the_one_asked_for(model):
    """Two mugs, the top left one blue, the bottom right one red: the pose lands on the mug the colour asks for,
    whatever the tiny model wrote, and the answer is the model's own (no lead)."""
    from training.stages import COLOURS

    image = camera()
    embedded = model.embed(image)
    classes = model.manifest.presence.classes
    identity = np.zeros_like(embedded.identity)
    identity[:, len(classes)] = 1.0
    colour = np.zeros_like(embedded.colour)
    colour[:, len(COLOURS)] = 1.0  # no colour word
    for k, word in ((0, "blue"), (1, "blue"), (2, "blue"), (8, "blue"), (9, "blue"), (62, "red"), (63, "red")):
        identity[k] = colour[k] = 0.0
        identity[k, classes.index("mug")] = colour[k, COLOURS.index(word)] = 1.0
    model.embed = lambda _image: embedded._replace(identity=identity, colour=colour)
    red = model.session().ask("I want the red mug.", image)
    assert red.pose is not None and red.pose.y >= 7 / 8 and red.pose.x >= 6 / 8
    blue = model.session().ask("grab the blue mug please", image)
    assert blue.pose.y < 2 / 8 and blue.pose.x < 3 / 8
    assert not red.reasoning.startswith("The one on")


def test_an_instruction_that_tells_twins_apart_by_size_grasps_the_one_asked_for(model):
    """Two mugs, a large one over the top left patches and a small one in the bottom right corner, in the view the
    target check measures: the pose lands on the mug the size word asks for, and the prediction's box is that
    mug's, whatever the tiny model wrote."""
    image = camera()
    embedded = model.embed(image)
    classes = model.manifest.presence.classes
    side = embedded.view.shape[0]
    identity = np.zeros_like(embedded.identity)
    identity[:, len(classes)] = 1.0
    for k in (0, 1, 63):
        identity[k, len(classes)], identity[k, classes.index("mug")] = 0.0, 1.0
    view = np.full_like(embedded.view, (180, 170, 130))
    patch = side // 8
    view[4 : patch - 4, 4 : 2 * patch - 4] = (40, 60, 200)  # the large mug, over patches 0 and 1
    view[7 * patch + 6 : side - 6, 7 * patch + 6 : side - 6] = (200, 40, 40)  # the small one, in patch 63
    model.embed = lambda _image: embedded._replace(identity=identity, check_view=view)
    small = model.session().ask("grab the smaller mug please", image)
    assert small.pose is not None and small.pose.y >= 7 / 8 and small.pose.x >= 7 / 8
    assert small.box == pytest.approx(((7 * patch + 6) / side, (7 * patch + 6) / side, 1 - 6 / side, 1 - 6 / side))
    assert small.resolved == "mug"  # what the size word resolved to, whatever category the tiny model wrote
    large = model.session().ask("I want the larger mug.", image)
    assert large.pose.y < 1 / 8 and large.pose.x < 2 / 8
    assert large.box == pytest.approx((4 / side, 4 / side, (2 * patch - 4) / side, (patch - 4) / side))


def test_the_view_the_target_check_measures_has_no_black_padding(model):
    """An image smaller than the bundle's crop is padded black in the view; the view the check measures paints the
    padding the image's median colour, so it reads as table and joins no objects along the border."""
    from appliance.runtime.model import padding_painted
    from appliance.runtime.preprocess import CropBox

    crop = model.manifest.image.crop
    image = np.full((crop * 3 // 4, crop, 3), (180, 170, 130), np.uint8)  # 3/4 of the crop's height
    image[40:60, 40:80] = (40, 60, 200)
    embedded = model.embed(image)
    side = embedded.view.shape[0]
    assert (embedded.view[:3] == 0).all() and (embedded.view[-3:] == 0).all()  # PIL's fill: black bands
    assert (embedded.check_view[:3] == (180, 170, 130)).all() and (embedded.check_view[-3:] == (180, 170, 130)).all()
    middle = slice(side // 8 + 2, side - side // 8 - 2)
    assert (embedded.check_view[middle] == embedded.view[middle]).all()  # the image itself is as it was
    inside = np.zeros((side, side, 3), np.uint8)
    assert padding_painted(inside, CropBox(0.0, 0.0, 100.0), (100, 100)) is inside  # no padding: the same array


def test_a_first_turns_hint_names_only_the_objects_the_head_sees_when_it_sees_any(model):
    """The bundle's knowledge hints every object a use may mean ("a mug, a cup, a bottle or a can"); the model,
    trained with such lists, tends to name the first. Of those the identity head sees on the table only they
    stay, so "something to drink from" next to a can hints the can: the prompt the model reads says so."""
    from appliance.hints import knowledge_from_mapping

    model.hints = knowledge_from_mapping(
        {
            "ignore": ["grab", "me"],
            "uses": {"drink": {"words": ["something to drink from"], "objects": ["a mug", "a can"]}},
        }
    )
    image = camera()
    embedded = model.embed(image)
    classes = model.manifest.presence.classes
    identity = np.zeros_like(embedded.identity)
    identity[:, len(classes)] = 1.0
    identity[9, len(classes)], identity[9, classes.index("can")] = 0.0, 1.0  # one can on the table, no mug
    model.embed = lambda _image: embedded._replace(identity=identity)
    prompts = []
    real = model.prompt_segments

    def recording(instruction, first, hint=None):
        prompts.append(real(instruction, first, hint))
        return prompts[-1]

    model.prompt_segments = recording
    first = model.session().ask("grab me something to drink from", image)
    assert first.hint == ("a can",)
    read = b"".join(model.llm.piece(t) for t in prompts[-1] if t is not None).decode()
    assert read.endswith("something to drink from Hint: a can. ASSISTANT:")
    # the one object hinted, and seen: the answer opens with it (real decoding under the lead's grammar), and the
    # target check puts the pose on it (row 1, column 1, or the table within reach of it)
    assert model.target.spec.leads["use"] == "{A_name} is"
    assert first.reasoning.startswith("A can is ")
    assert first.pose is not None and first.pose.x < 3 / 8 and first.pose.y < 3 / 8
    identity[9, classes.index("can")], identity[9, len(classes)] = 0.0, 1.0  # nothing of either: both stay
    both = model.session().ask("grab me something to drink from", image)
    assert both.hint == ("a mug", "a can") and not both.reasoning.startswith(("A mug is", "A can is"))
    assert model.hint_objects("grab me something to drink from") == ["a mug", "a can"]  # without a picture


def test_a_manifest_asking_for_the_check_needs_the_graphs_maps(target_bundle, refusing_bundle, tmp_path):
    import shutil

    import yaml

    from appliance.bundle import MANIFEST_FILE, BundleError, read_bundle
    from appliance.runtime.llm import LlamaError, LlamaSettings
    from appliance.runtime.model import GraspModel

    bundle = tmp_path / "bundle"
    shutil.copytree(target_bundle, bundle)
    data = yaml.safe_load((bundle / MANIFEST_FILE).read_text())
    data["files"]["vision.onnx"] = yaml.safe_load((refusing_bundle / MANIFEST_FILE).read_text())["files"]["vision.onnx"]
    shutil.copy(refusing_bundle / "vision.onnx", bundle / "vision.onnx")  # a graph without the maps (or presence)
    data["presence"] = None
    (bundle / MANIFEST_FILE).write_text(yaml.safe_dump(data))
    with pytest.raises(BundleError, match="target_check needs a presence section"):
        read_bundle(bundle)
    data["presence"] = yaml.safe_load((target_bundle / MANIFEST_FILE).read_text())["presence"]
    (bundle / MANIFEST_FILE).write_text(yaml.safe_dump(data))
    with pytest.raises(LlamaError, match="no .*output"):
        GraspModel.load(bundle, llama=LlamaSettings(n_ctx=512, n_batch=64))


def test_the_target_check_needs_heads(refusing_checkpoint, tmp_path, capsys):
    from export.quantize import main

    with pytest.raises(SystemExit):
        main(["--bits", "8", "--model", str(refusing_checkpoint), "--out", str(tmp_path / "b"), "--target-check"])
    assert "--target-check needs --heads" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            ["--bits", "8", "--model", str(refusing_checkpoint), "--out", str(tmp_path / "b"), "--target-pose", "heads"]
        )
    assert "--target-pose needs --target-check" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--bits", "8", "--model", str(refusing_checkpoint), "--out", str(tmp_path / "b"), "--no-spatial"])
    assert "--no-spatial needs --target-check" in capsys.readouterr().err


def test_the_leads_are_the_training_datas_and_need_every_heads_category_known():
    from export.gguf import ExportError
    from export.quantize import answer_leads
    from training.reasoning.referring import resolution

    leads, a_names = answer_leads(["mug", "apple", "object"])
    assert leads["near"] == "The one nearest the robot is {a_name}."
    assert leads["use"] == "{A_name} is"  # the words before the use
    assert leads["only"] == "The image shows {a_name}."  # a reasoning frame's first sentence
    assert resolution("function", "a mug", {"use": "drink"}).startswith(leads["use"].format(A_name="A mug") + " ")
    assert a_names == {"mug": "a mug", "apple": "an apple", "object": "an object"}
    with pytest.raises(ExportError, match="gizmo"):
        answer_leads(["mug", "gizmo"])


def test_the_evaluations_answerer_reports_the_pose_the_model_wrote(model):
    from training.evaluate import bundle_answerer

    image = camera()
    embedded = with_knife(model, image)
    model.embed = lambda _image: embedded
    scripted(model, "It is a knife, a long thin blade. [0.90, 0.90], 0.00")
    text, _, extra = bundle_answerer(model)(image, None, "hand me something to cut with")
    assert extra["written"] == {"x": 0.9, "y": 0.9, "theta": 0.0} and "[0.90, 0.90]" not in text
    scripted(model, "It is a knife, a long thin blade. [0.06, 0.06], 0.00")
    assert bundle_answerer(model)(image, None, "hand me something to cut with")[2]["written"] is None


def test_the_model_process_uses_the_check_unless_told_not_to(target_bundle):
    """Through the daemon's model process: the check is on where the bundle has one, off when the config says so, and
    answers cross the process boundary with their ``written`` field."""
    from appliance.daemon.jobs import prediction_fields
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.worker import ModelWorker, RemoteSession

    for wanted in (True, False):
        worker = ModelWorker(target_bundle, llama=LlamaSettings(n_ctx=512, n_batch=64), target_check=wanted).start()
        try:
            assert worker.target_active is wanted
            prediction = RemoteSession(worker).ask("hand me something to cut with", camera())
            fields = prediction_fields(prediction)
            # the doctored head sees a mug on every patch: any pose is on a mug, nothing else can be moved to
            assert fields["written"] is None and "pose" in fields
        finally:
            worker.close()


# --- the part check in a real bundle: the part head's map in the graph, a part follow-up moved onto the part ---


def write_part_head(heads, out, seed: int = 0):
    """A random part head (``training.parts``'s files) for the vision-stage checkpoint ``heads``."""
    import json

    import torch
    from safetensors.torch import save_file

    from appliance.bundle import sha256_file
    from training.model import load_llava
    from training.parts import PARTS_FILE, PARTS_META, PartHead, part_classes

    hidden = load_llava(heads)[0].config.vision_config.hidden_size
    torch.manual_seed(seed)
    head = PartHead(hidden, len(part_classes()))
    out.mkdir(parents=True, exist_ok=True)
    save_file(head.state_dict(), str(out / PARTS_FILE))
    meta = {"classes": part_classes(), "hidden": hidden, "width": head.width, "model": str(heads),
            "vision_sha256": sha256_file(heads / "model.safetensors"), "activation": "sigmoid"}  # fmt: skip
    (out / PARTS_META).write_text(json.dumps(meta))
    return out


@pytest.fixture(scope="module")
def parts_bundle(refusing_checkpoint, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("onnxruntime")
    import shutil

    from export.quantize import build_bundle
    from tests.appliance.runtime.test_presence import write_heads

    root = tmp_path_factory.mktemp("parts")
    heads = root / "vision"
    shutil.copytree(refusing_checkpoint, heads)
    write_heads(heads)
    parts = write_part_head(heads, root / "parts")
    manifest = build_bundle(
        refusing_checkpoint, root / "bundle", bits=8, progress=False, heads=heads, target_check=True, parts=parts
    )
    assert manifest.metrics["parts_max_error"] <= 1e-4  # the graph's part map is the head's own arithmetic
    return root / "bundle"


def test_the_graph_gives_each_patchs_part_and_the_manifest_each_categorys_parts(parts_bundle):
    from appliance.bundle import read_bundle
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel
    from training.parts import part_classes

    spec = read_bundle(parts_bundle).target_check
    assert spec.parts == "patch_parts" and spec.part_classes == tuple(part_classes())
    assert spec.category_parts["mug"] == ("handle", "rim") and "knife" not in spec.category_parts  # one part: no choice
    assert spec.part_grasp == "patch_part_grasp"  # the head places each part's grasp in its patch
    model = GraspModel.load(parts_bundle, llama=LlamaSettings(n_ctx=512, n_batch=64))
    try:
        embedded = model.embed(camera())
        assert embedded.parts.shape == (64, len(part_classes()))
        assert np.all((embedded.parts > 0) & (embedded.parts < 1))  # one probability per part
        place = embedded.part_grasp
        assert place.shape == (64, len(part_classes()), 4)
        assert np.all((place[..., :2] > 0) & (place[..., :2] < 1)) and np.all(np.abs(place[..., 2:]) < 1)
    finally:
        model.llm.close()


def test_a_part_head_from_before_the_placements_still_exports_without_them(refusing_checkpoint, parts_bundle, tmp_path):
    pytest.importorskip("llama_cpp")
    import shutil

    from safetensors.torch import load_file, save_file

    from appliance.bundle import read_bundle
    from export.quantize import build_bundle
    from training.parts import PARTS_FILE

    parts = tmp_path / "parts"
    shutil.copytree(parts_bundle.parent / "parts", parts)
    tensors = load_file(str(parts / PARTS_FILE))
    save_file({k: v for k, v in tensors.items() if not k.startswith("place.")}, str(parts / PARTS_FILE))
    heads = parts_bundle.parent / "vision"
    manifest = build_bundle(
        refusing_checkpoint, tmp_path / "b", bits=8, progress=False, heads=heads, target_check=True, parts=parts
    )
    spec = read_bundle(tmp_path / "b").target_check
    assert spec.parts == "patch_parts" and spec.part_grasp == "" and manifest.metrics["parts_max_error"] <= 1e-4
    assert "part_grasp" not in (tmp_path / "b" / "manifest.yaml").read_text()  # readable by runtimes from before
    for broken, error in (
        ({**tensors, "place.weight": tensors["place.weight"][:-1]}, "placement outputs"),
        ({**tensors, "place.bias": tensors["place.bias"][:-1]}, "placement outputs"),
        ({k: v for k, v in tensors.items() if k != "place.bias"}, "place.weight without its pair"),
    ):
        save_file(broken, str(parts / PARTS_FILE))
        with pytest.raises(ValueError, match=error):
            build_bundle(refusing_checkpoint, tmp_path / "c", bits=8, progress=False, heads=heads,
                         target_check=True, parts=parts)  # fmt: skip


def test_a_part_follow_up_moves_onto_the_part_named_and_one_already_on_it_stays(parts_bundle):
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel

    model = GraspModel.load(parts_bundle, llama=LlamaSettings(n_ctx=512, n_batch=64))
    try:
        image = camera()
        embedded = model.embed(image)  # the head sees a mug on every patch
        classes = model.manifest.presence.classes
        assert set(embedded.identity.argmax(-1)) == {classes.index("mug")}
        parts = np.zeros_like(embedded.parts)
        parts_of = list(model.target.spec.part_classes)
        parts[:, parts_of.index("rim")] = 1.0
        parts[10], parts[10, parts_of.index("handle")] = 0.0, 1.0  # one patch of the handle: row 1, column 2
        place = np.zeros_like(embedded.part_grasp)
        place[..., 2] = 1.0
        place[10, parts_of.index("handle")] = (0.5, 0.25, math.cos(1.6), math.sin(1.6))  # the handle's grasp: θ 0.8
        model.embed = lambda _image: embedded._replace(parts=parts, part_grasp=place)
        session = model.session()
        scripted(model, "It is a mug, a cylinder with a handle. [0.90, 0.90], 0.00")
        first = session.ask("pick up the mug", image)
        assert first.written is None and first.pose == GraspPose(0.9, 0.9, 0.0)  # on the mug: the model's pose
        scripted(model, "Moving the grasp to the handle of the mug. [0.80, 0.90], 0.00")
        handle = session.ask("grasp it by the handle instead")
        assert handle.written == GraspPose(0.8, 0.9, 0.0)
        # where the part head places the handle's grasp in its patch: (2 + 0.5) / 8, (1 + 0.25) / 8, as written
        assert (handle.pose.x, handle.pose.y, handle.pose.theta) == pytest.approx((0.31, 0.16, 0.8))
        assert handle.text == model.format.render(handle.pose, handle.reasoning)
        scripted(model, "Moving the grasp to the rim of the mug. [0.60, 0.60], 0.00")
        rim = session.ask("now hold it by the rim")
        assert rim.written is None and rim.pose == GraspPose(0.6, 0.6, 0.0)  # on a rim patch: kept
        from training.evaluate import BundleAnswerer

        answerer = BundleAnswerer(model)  # the evaluation reports the model's own follow-up pose where it moved it
        scripted(model, "It is a mug, a cylinder with a handle. [0.90, 0.90], 0.00")
        answerer(image, None, "pick up the mug")
        scripted(model, "Moving the grasp to the handle of the mug. [0.80, 0.90], 0.00")
        answerer.follow_up("grasp it by the handle instead")
        assert answerer.follow_up_written == GraspPose(0.8, 0.9, 0.0)
    finally:
        model.llm.close()


def test_a_part_head_of_another_vision_stage_or_without_the_target_check_is_refused(
    refusing_checkpoint, parts_bundle, tmp_path, capsys
):
    import json
    import shutil

    from export.quantize import build_bundle, main
    from training.parts import PARTS_META

    heads = parts_bundle.parent / "vision"
    parts = tmp_path / "parts"
    shutil.copytree(parts_bundle.parent / "parts", parts)
    meta = json.loads((parts / PARTS_META).read_text())
    (parts / PARTS_META).write_text(json.dumps({**meta, "vision_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="trained on another vision stage"):
        build_bundle(refusing_checkpoint, tmp_path / "b", bits=8, progress=False, heads=heads, target_check=True,
                     parts=parts)  # fmt: skip
    (parts / PARTS_META).write_text(json.dumps({k: v for k, v in meta.items() if k != "activation"}))
    with pytest.raises(ValueError, match="older format"):  # the first, one-part-per-patch head
        build_bundle(refusing_checkpoint, tmp_path / "b", bits=8, progress=False, heads=heads, target_check=True,
                     parts=parts)  # fmt: skip
    (parts / PARTS_META).unlink()
    with pytest.raises(ValueError, match="no parts.json"):
        build_bundle(refusing_checkpoint, tmp_path / "b", bits=8, progress=False, heads=heads, target_check=True,
                     parts=parts)  # fmt: skip
    with pytest.raises(SystemExit):
        main(["--bits", "8", "--model", str(refusing_checkpoint), "--out", str(tmp_path / "b"), "--heads", str(heads),
              "--parts", str(parts)])  # fmt: skip
    assert "--parts needs --target-check" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_the_cnn_baselines_run_from_a_bundles_graph_as_from_the_checkpoint(target_bundle, tmp_path):
    """A user with the bundle alone gets the CNN baselines beside the model (``training.evaluate --cnn BUNDLE``):
    the graph's maps are the heads' own, so every baseline pose is the checkpoint's, to the rounding."""
    from training.baseline import cnn_predictor, cnn_told_predictor, cnn_words_predictor, is_bundle
    from training.datasets import open_dataset
    from training.synth import SynthConfig, write_synthetic_dataset

    heads = target_bundle.parent / "vision"
    assert is_bundle(target_bundle) and not is_bundle(heads)
    dataset = open_dataset(write_synthetic_dataset(tmp_path, 2, SynthConfig(seed=3, objects=(2, 3)), progress=False))
    requests = [(dataset.load(i.image), i) for i in dataset.instructions]
    assert requests
    for make in (cnn_predictor, cnn_words_predictor, lambda source: cnn_told_predictor(dataset, source)):
        exported, trained = make(target_bundle), make(heads)
        for sample, instruction in requests:
            a, b = exported(sample, instruction), trained(sample, instruction)
            assert (a is None) == (b is None), instruction.text
            if a is not None:
                assert (a.x, a.y) == pytest.approx((b.x, b.y), abs=1e-4) and angle_close(a.theta, b.theta)


def angle_close(a: float, b: float) -> bool:
    from appliance.grasp import angle_difference

    return angle_difference(a, b) < 1e-3


def test_a_bundle_without_the_heads_maps_is_no_cnn_baseline(refusing_bundle):
    from training.baseline import cnn_predictor

    with pytest.raises(ValueError, match="no target check"):
        cnn_predictor(refusing_bundle)


def test_a_follow_up_that_says_it_rotates_takes_the_heads_turned_grasp_even_at_the_old_angle(model):
    """Real session: the knife shows on two patches, held along (θ = 0) on the likelier one and across (π/2) on the
    other. The first answer takes the heads' grasp (θ = 0); a follow-up that says it rotates but writes its old
    angle gets the turned one; one that moves to a side keeps its pose."""
    model.target = TargetCheck(replace(model.target.spec, pose="heads"), model.target.index, model.target.names)
    image = camera()
    embedded = model.embed(image)
    classes = model.manifest.presence.classes
    identity = np.zeros_like(embedded.identity)
    identity[:, len(classes)] = 1.0
    grasp = embedded.grasp.copy()
    for k, theta, logit in ((0, 0.0, 9.0), (1, math.pi / 2, 5.0)):
        identity[k], identity[k, classes.index("knife")] = 0.0, 1.0
        grasp[k] = (logit, 0.5, 0.5, math.cos(2 * theta), math.sin(2 * theta))
    model.embed = lambda _image: embedded._replace(identity=identity, grasp=grasp)
    session = model.session()
    scripted(model, "It is a knife, a long thin blade. [0.06, 0.06], 0.00")
    first = session.ask("hand me something to cut with", image)  # names nothing the presence gate would refuse
    assert (first.pose.x, first.pose.y, first.pose.theta) == pytest.approx((0.5 / 8, 0.5 / 8, 0.0), abs=0.006)
    scripted(model, "Rotating the gripper by 90 degrees: 0.00 to 1.57. [0.06, 0.06], 0.02")
    turned = session.ask("rotate the gripper by 90 degrees")
    assert turned.written.theta == pytest.approx(0.02)  # the model kept its angle ...
    assert (turned.pose.x, turned.pose.y) == pytest.approx((1.5 / 8, 0.5 / 8), abs=0.006)  # ... the check did not
    assert angle_close(turned.pose.theta, math.pi / 2)  # ±π/2: one grasp
    stated = f"Rotating the gripper by 90 degrees: 0.00 to {turned.pose.theta:.2f}."  # the turn taken, said
    assert turned.reasoning == stated and turned.text.startswith(stated)
    scripted(model, "Moving the grasp to the right: x 0.19 to 0.29. [0.29, 0.06], 1.57")
    shifted = session.ask("move the grasp to the right")
    assert shifted.written is None
    assert (shifted.pose.x, shifted.pose.y, shifted.pose.theta) == pytest.approx((0.29, 0.06, 1.57))


def test_a_bundle_without_reasoning_gets_no_lead_but_its_referent_still_moves_the_pose(nra_bundle, tmp_path):
    """An NR-A bundle exported with the target check: a spatial request or one by use decodes under the NR grammar
    (a lead opens only an RT answer's reasoning; before, asking for one raised) and nothing raises."""
    import shutil

    from appliance.hints import knowledge_from_mapping
    from appliance.runtime.llm import LlamaSettings
    from appliance.runtime.model import GraspModel
    from export.quantize import build_bundle
    from tests.appliance.runtime.test_presence import write_heads

    checkpoint = tmp_path / "ckpt"
    shutil.copytree(nra_bundle.parent / "ckpt", checkpoint)
    (checkpoint / "view.json").write_text(
        '{"variant": "nr-a", "decimals": 3, "size": 224, "crop": 320, "refusals": true}'
    )
    heads = tmp_path / "vision"
    shutil.copytree(checkpoint, heads)
    write_heads(heads)  # the identity head sees a mug on every patch
    manifest = build_bundle(checkpoint, tmp_path / "bundle", bits=8, progress=False, heads=heads,
                            target_check=True)  # fmt: skip
    assert manifest.answer.variant == "nr-a" and manifest.target_check.leads["use"] == "{A_name} is"
    nr = GraspModel.load(tmp_path / "bundle", llama=LlamaSettings(n_ctx=512, n_batch=64))
    try:
        nr.hints = knowledge_from_mapping(
            {"ignore": ["me"], "uses": {"drink": {"words": ["something to drink from"], "objects": ["a mug"]}}}
        )
        for instruction in ("hand me something to drink from", "pick up the mug on the left"):
            answer = nr.session().ask(instruction, camera())  # the random model answers what it will: no lead
            assert not answer.text.lstrip().startswith(("A mug is", "The one on the left")), answer.text
    finally:
        nr.llm.close()


def test_an_instruction_naming_nothing_opens_with_the_one_object_the_head_sees(model):
    """Real decoding under the lead's grammar: the head sees one mug over the whole view, so "Lift the object."
    opens "The image shows a mug." whatever the tiny model would have written; two objects leave it to the model."""
    assert model.target.spec.leads["only"] == "The image shows {a_name}."
    image = camera()
    first = model.session().ask("Lift the object.", image)  # write_heads: a mug on every patch
    assert first.reasoning.startswith("The image shows a mug. ") and first.pose is not None
    embedded = model.embed(image)
    classes = model.manifest.presence.classes
    identity = np.zeros_like(embedded.identity)
    identity[:, len(classes)] = 1.0
    for k, category in ((0, "mug"), (63, "knife")):  # two objects, far apart
        identity[k], identity[k, classes.index(category)] = 0.0, 1.0
    model.embed = lambda _image: embedded._replace(identity=identity)
    assert not model.session().ask("Lift the object.", image).reasoning.startswith("The image shows a")


def table_view(objects: dict[tuple[int, int, int, int], tuple[int, int, int]], seed: int = 0) -> np.ndarray:
    """A 64 x 64 view (16 pixels a patch of the 4 x 4 grid) of a table, a slightly noisy beige, with ``objects``
    ((top, left, bottom, right) → RGB) painted on it."""
    rng = np.random.default_rng(seed)
    view = np.clip(np.array([180, 170, 130]) + rng.normal(0, 2, (64, 64, 3)), 0, 255)
    for (top, left, bottom, right), rgb in objects.items():
        view[top:bottom, left:right] = rgb
    return view.astype(np.uint8)


def test_an_object_told_from_its_twins_by_size_is_the_one_of_that_footprint_in_the_view():
    # a large mug over patches (0, 0)-(0, 1), a small one in (3, 3) with a knife touching it on its left
    identity, grasp = maps({(0, 0): "mug", (0, 1): "mug", (3, 3): "mug", (3, 2): "knife"}, best={(0, 0): 1.0})
    view = table_view({(2, 2, 14, 30): (40, 60, 200), (50, 50, 60, 60): (200, 40, 40), (50, 30, 60, 50): (90, 90, 90)})
    larger = CHECK.referent("I want the larger mug.", identity, view=view)
    assert larger.relation is None and larger.category == "mug" and larger.word == "larger"
    assert np.argwhere(larger.patches).tolist() == [[0, 0], [0, 1]]
    assert CHECK.lead(larger) == ""  # the model's answer names the size: "The larger one is a mug."
    smallest = CHECK.referent("grab the smallest coffee mug please", identity, view=view)  # the knife is not counted
    assert np.argwhere(smallest.patches).tolist() == [[3, 3]]
    pose = HEADS.on_referent(at(0, 0), smallest, identity, grasp)  # the model chose the large mug
    assert (pose.x, pose.y) == pytest.approx((3.5 / GRID, 3.5 / GRID))
    # a colour word is the colour map's to decide; without a view, or with one mug, the model's pose decides
    assert CHECK.referent("the larger mug", identity) is None
    # a colour word the bundle has no colour map for leaves the size to decide; one it has, the colour
    assert np.argwhere(CHECK.referent("the larger red mug", identity, view=view).patches).tolist() == [[0, 0], [0, 1]]
    red = colours({(0, 0): "blue", (0, 1): "blue", (3, 3): "red"})
    assert COLOURED.referent("the larger red mug", identity, colour=red, view=view).word == "red"
    one, _ = maps({(0, 0): "mug", (0, 1): "mug"})
    assert CHECK.referent("the larger mug", one, view=view) is None
    assert CHECK.referent("the mug", identity, view=view) is None  # no size word
    assert CHECK.referent("the tall mug", identity, view=view) is None  # not a size the footprint tells


def test_a_size_is_left_to_the_model_on_a_near_tie_and_one_object_the_head_splits_counts_once():
    identity, _ = maps({(0, 0): "mug", (3, 3): "mug"})
    tie = table_view({(2, 2, 12, 12): (40, 60, 200), (51, 51, 61, 61): (200, 40, 40)})  # the same size
    assert CHECK.referent("the larger mug", identity, view=tie) is None
    # a long mug over (0, 0)-(0, 2) whose middle patch the head calls table, and a smaller one in (3, 3): by the
    # head's groups three instances, the smallest a part of the long one; in the view's pixels two
    split, _ = maps({(0, 0): "mug", (0, 2): "mug", (3, 3): "mug"})
    view = table_view({(4, 4, 10, 44): (40, 60, 200), (50, 50, 60, 60): (200, 40, 40)})
    assert np.argwhere(CHECK.referent("the smaller mug", split, view=view).patches).tolist() == [[3, 3]]
    assert np.argwhere(CHECK.referent("the bigger mug", split, view=view).patches).tolist() == [[0, 0], [0, 2]]
    # no patch shows the table: no colour to tell objects from it
    covered, _ = maps({(r, c): "mug" for r in range(GRID) for c in range(GRID)})
    assert CHECK.referent("the larger mug", covered, view=view) is None


def test_a_long_object_the_head_splits_is_one_object_in_the_view_for_a_spatial_request():
    # a knife over the whole top row that the head sees only at its ends (0, 0) and (0, 3), and a short knife in (3, 2)
    identity, grasp = maps({(0, 0): "knife", (0, 3): "knife", (3, 2): "knife"}, best={(0, 3): 5.0, (3, 2): 1.0})
    view = table_view({(4, 2, 10, 62): (90, 90, 90), (52, 36, 60, 44): (90, 90, 90)})
    far = "grab the knife farthest away from the robot please"
    # by the head's groups the long knife's far end leads; in the view's pixels its centre lies nearer than the short one
    assert np.argwhere(SPATIAL.referent(far, identity).patches).tolist() == [[0, 3]]
    assert np.argwhere(SPATIAL.referent(far, identity, view=view).patches).tolist() == [[3, 2]]
    near = SPATIAL.referent("I want the knife nearest to the robot.", identity, view=view)
    assert np.argwhere(near.patches).tolist() == [[0, 0], [0, 3]]  # both ends: the heads' best grasp on either
    assert SPATIAL.on_referent(at(3, 2), near, identity, grasp) == at(0, 3, math.pi / 4)
    # the pixels miss the short knife (the table's colour): the head's groups stand
    faint = table_view({(4, 2, 10, 62): (90, 90, 90), (52, 36, 60, 44): (181, 171, 131)})
    assert np.argwhere(SPATIAL.referent(far, identity, view=faint).patches).tolist() == [[0, 3]]
    # the pixels split what the head sees as one object (a pair of sunglasses' lenses): the head's groups stand
    lenses, _ = maps({(1, 0): "mug", (1, 1): "mug", (3, 3): "mug"})
    view = table_view({(20, 2, 30, 12): (20, 20, 20), (20, 20, 30, 30): (20, 20, 20), (52, 52, 60, 60): (20, 20, 20)})
    labels, mug = lenses.argmax(-1).reshape(GRID, GRID), CLASSES.index("mug")
    assert [np.argwhere(g).tolist() for g in SPATIAL.objects(labels, mug, view)] == [[[1, 0], [1, 1]], [[3, 3]]]


def test_the_box_of_the_object_a_pose_holds_is_its_footprint_in_the_view():
    identity, _ = maps({(0, 0): "mug", (0, 1): "mug", (3, 3): "mug", (3, 2): "knife"})
    view = table_view({(2, 2, 14, 30): (40, 60, 200), (50, 50, 60, 60): (200, 40, 40), (50, 30, 60, 50): (90, 90, 90)})
    assert CHECK.object_box(at(0, 1), "mug", identity, view) == pytest.approx((2 / 64, 2 / 64, 30 / 64, 14 / 64))
    # the knife touching the small mug is cut at the patches' border: its two columns on the mug's patch count as mug
    assert CHECK.object_box(at(3, 3), "mug", identity, view) == pytest.approx((48 / 64, 50 / 64, 60 / 64, 60 / 64))
    assert CHECK.object_box(at(3, 2), "knife", identity, view) == pytest.approx((30 / 64, 50 / 64, 48 / 64, 60 / 64))
    assert CHECK.object_box(at(2, 0), "mug", identity, view) is None  # on the table, no mug patch within reach
    assert CHECK.object_box(at(0, 0), None, identity, view) is None  # the answer names no category
    assert CHECK.object_box(at(0, 0), "whisk", identity, view) is None  # one the head lacks
    assert CHECK.object_box(at(0, 0), "mug", identity, table_view({})) is None  # the pixels show nothing there


def test_twins_the_head_sees_as_one_are_told_apart_by_size_but_not_by_place():
    # two mugs side by side over (1, 1) and (1, 2): one group of the head's, two regions of pixels with a gap
    identity, _ = maps({(1, 1): "mug", (1, 2): "mug"})
    view = table_view({(18, 18, 30, 31): (40, 60, 200), (18, 34, 26, 42): (200, 40, 40)})
    assert np.argwhere(CHECK.referent("the smaller mug", identity, view=view).patches).tolist() == [[1, 2]]
    assert np.argwhere(CHECK.referent("the larger mug", identity, view=view).patches).tolist() == [[1, 1]]
    # a spatial request keeps the head's one group (the pixels may split one object), and takes its side of it
    # the box of the mug a pose holds is the one under it, not the larger of the group
    assert CHECK.object_box(at(1, 2), "mug", identity, view) == pytest.approx((34 / 64, 18 / 64, 42 / 64, 26 / 64))
    assert CHECK.object_box(at(1, 1), "mug", identity, view) == pytest.approx((18 / 64, 18 / 64, 32 / 64, 30 / 64))
    far = SPATIAL.referent("the mug farthest from the robot", identity, view=view)
    assert np.argwhere(far.patches).tolist() == [[1, 2]]
    labels = identity.argmax(-1).reshape(GRID, GRID)
    assert len(SPATIAL.objects(labels, CLASSES.index("mug"), view)) == 1


def test_a_texture_is_no_objects_and_an_all_object_view_no_table(monkeypatch):
    import warnings

    from appliance.runtime import target

    grown = []
    real = target.joined
    monkeypatch.setattr(target, "joined", lambda *a: grown.append(1) or real(*a))

    identity, _ = maps({(r, c): "mug" for r in range(3) for c in range(GRID)})  # the bottom row is table
    checkered = table_view({})
    cells = np.add.outer(np.arange(48) // 2, np.arange(64) // 2) % 2 == 0  # checkered in the pixels measured
    checkered[:48][cells] = (20, 20, 20)
    labels = identity.argmax(-1).reshape(GRID, GRID)
    assert footprints(checkered, labels, CLASSES.index("mug"), TABLE) == []
    assert grown == []  # no region grown from any of its 384 dark pixels: each alone, dropped before
    dotted = table_view({(r, c, r + 4, c + 4): (20, 20, 20) for r in range(0, 46, 6) for c in range(0, 62, 6)})
    assert footprints(dotted, labels, CLASSES.index("mug"), TABLE) == []  # 88 dots, each smaller than an object
    assert len(grown) == target.MAX_REGIONS  # grown up to the cap, then given up: a texture
    everywhere, _ = maps({(r, c): "mug" for r in range(GRID) for c in range(GRID)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no median of nothing
        assert footprints(checkered, everywhere.argmax(-1).reshape(GRID, GRID), CLASSES.index("mug"), TABLE) == []
    assert footprints(checkered[:, :, 0], labels, CLASSES.index("mug"), TABLE) == []  # not an RGB view
