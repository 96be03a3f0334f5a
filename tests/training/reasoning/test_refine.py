import math
import random

import pytest

from appliance.grasp import GraspPose
from training.reasoning.refine import Refinement, candidates, draw_refinement, possible_requests, satisfies

POSES = [
    GraspPose(0.50, 0.50, 0.0),
    GraspPose(0.52, 0.50, math.radians(85)),  # rotated
    GraspPose(0.30, 0.52, 0.05),  # to the left
    GraspPose(0.50, 0.80, 0.0),  # below
]
PARTS = ["rim", "rim", "handle", "rim"]


def test_satisfies_each_kind():
    start = POSES[0]
    assert satisfies(Refinement("rotate"), start, POSES[1])
    assert not satisfies(Refinement("rotate"), start, POSES[2])
    assert satisfies(Refinement("side", side="left"), start, POSES[2])
    assert not satisfies(Refinement("side", side="right"), start, POSES[2])
    assert satisfies(Refinement("side", side="bottom"), start, POSES[3])
    assert not satisfies(Refinement("side", side="top"), start, POSES[3])
    assert satisfies(Refinement("part", part="handle"), start, POSES[2], "handle")
    assert not satisfies(Refinement("part", part="handle"), start, POSES[1], "rim")


def test_candidates_and_possible_requests():
    assert candidates(Refinement("rotate"), 0, POSES) == [1]
    assert candidates(Refinement("part", part="handle"), 0, POSES, PARTS) == [2]
    kinds = {(r.kind, r.part, r.side) for r in possible_requests(0, POSES, PARTS)}
    assert kinds == {("rotate", None, None), ("side", None, "left"), ("side", None, "bottom"), ("part", "handle", None)}
    assert possible_requests(0, POSES[:1]) == []


def test_drawn_refinement_is_feasible_and_deterministic():
    for seed in range(20):
        request, target = draw_refinement(random.Random(seed), 0, POSES, PARTS)
        assert satisfies(request, POSES[0], POSES[target], PARTS[target])
        assert draw_refinement(random.Random(seed), 0, POSES, PARTS) == (request, target)


def test_malformed_requests_are_refused():
    with pytest.raises(ValueError):
        Refinement("shake")
    with pytest.raises(ValueError):
        Refinement("side", side="north")
    with pytest.raises(ValueError):
        Refinement("part")
