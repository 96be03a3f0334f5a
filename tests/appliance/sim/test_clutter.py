import math
import random

from appliance.sim.clutter import (
    Box2,
    arrange,
    colour_word,
    footprint,
    inside,
    overlaps,
    radius,
    size_of,
)
from appliance.sim.objects import CATEGORIES, make_object


def test_boxes_overlap_only_when_they_meet():
    a = [Box2(0.0, 0.0, 0.0, 0.05, 0.02)]
    assert overlaps(a, [Box2(0.09, 0.0, 0.0, 0.05, 0.02)], gap=0.0)  # 1 cm into each other
    assert not overlaps(a, [Box2(0.11, 0.0, 0.0, 0.05, 0.02)], gap=0.0)  # 1 cm apart
    assert overlaps(a, [Box2(0.11, 0.0, 0.0, 0.05, 0.02)], gap=0.02)  # but closer than a 2 cm gap
    # turned by 90 degrees the long box no longer reaches
    assert not overlaps(a, [Box2(0.08, 0.0, math.pi / 2, 0.05, 0.02)], gap=0.0)
    assert overlaps(a, [Box2(0.06, 0.0, math.pi / 2, 0.05, 0.02)], gap=0.0)


def test_a_footprint_turns_with_the_object():
    knife = make_object("knife", random.Random(0))
    along_x = footprint(knife, 0.0, 0.0, 0.0)
    along_y = footprint(knife, 0.0, 0.0, math.pi / 2)
    extent = [max(abs(p[i]) for b in along_x for p in b.corners()) for i in (0, 1)]
    turned = [max(abs(p[i]) for b in along_y for p in b.corners()) for i in (0, 1)]
    assert extent[0] > 3 * extent[1] and math.isclose(turned[1], extent[0], rel_tol=1e-6)
    assert radius(knife) >= extent[0] - 1e-9


def test_arrangements_do_not_overlap_and_stay_in_the_area():
    rng = random.Random(4)
    library = [make_object(c, rng) for c in CATEGORIES]
    area = (0.5, 0.0, 0.16, 0.16)
    arranged = 0
    close = 0
    for seed in range(12):
        r = random.Random(seed)
        objects = r.sample(library, 3)
        placements = arrange(objects, area, r)
        if placements is None:
            continue
        arranged += 1
        prints = [footprint(o, p.x, p.y, p.yaw) for o, p in zip(objects, placements)]
        assert all(inside(f, area) for f in prints)
        for i in range(3):
            for j in range(i):
                assert not overlaps(prints[i], prints[j])
                close += overlaps(prints[i], prints[j], gap=0.03)
    assert arranged >= 6
    assert close > 0  # some objects stand right beside another


def test_colour_words_and_their_borders():
    assert colour_word((0.9, 0.1, 0.1, 1)) == "red"
    assert colour_word((0.1, 0.2, 0.9, 1)) == "blue"
    assert colour_word((0.5, 0.5, 0.52, 1)) is None  # grey: no hue
    # a hue right on the border between orange and yellow (45 degrees) names neither
    assert colour_word((1.0, 0.75, 0.0, 1)) is None
    assert colour_word((0.95, 0.05, 0.12, 1)) == "red"  # near 360: still red on both sides


def test_sizes_order_instances_of_a_category():
    small = make_object("ball", random.Random(1))
    sizes = sorted((size_of(make_object("ball", random.Random(s))), s) for s in range(10))
    assert sizes[0][0] < sizes[-1][0]
    assert size_of(small) > 0
