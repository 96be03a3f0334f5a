"""The resolved object: the category a reasoning names first, the pixel box of the object at the grasp centre."""

import numpy as np
import pytest

from appliance.runtime.objects import CategoryNames, object_box, table_depth

NAMES = {
    "knife": "knife",
    "kitchen knife": "knife",
    "mug": "mug",
    "coffee mug": "mug",
    "water": "water",  # a made-up category whose name starts a longer one's synonym
    "water bottle": "bottle",
    "bottle": "bottle",
    "cup": "cup",
}


@pytest.mark.parametrize(
    "text, category",
    [
        ("The one on the left is a knife, a long thin blade with a handle; the mug is behind it.", "knife"),
        ("Behind the knife stands a coffee mug.", "knife"),  # the earliest mention, not the longest
        ("It is a water bottle with a cap.", "bottle"),  # at one position the longest name wins
        ("Water spilled near the cup.", "water"),
        ("A COFFEE MUG with a loop handle.", "mug"),  # any case
        ("The cupboard holds mugs.", None),  # whole words only: neither 'cup' in 'cupboard' nor 'mug' in 'mugs'
        ("Pinch the smug-looking handle.", None),  # 'mug' inside a word
        ("A kitchen-knife.", "knife"),  # a hyphen ends a word: 'knife' stands whole
        ("", None),
    ],
)
def test_the_first_category_named(text, category):
    assert CategoryNames(NAMES).first(text) == category


def test_a_modifier_is_not_the_name():
    names = CategoryNames({**NAMES, "orange": "orange", "spoon": "spoon"})
    assert names.first("The orange one is a spoon, a bowl on a handle.") == "spoon"
    assert names.first("The orange cup is nearest.") == "cup"
    assert names.first("There is an orange on the table.") == "orange"


@pytest.mark.parametrize(
    "text, requested",
    [
        ("Can you lift the knife?", ("knife", "knife")),  # 'Can' the verb, not the can
        ("Can you lift the can?", ("can", "can")),
        ("grab the smaller orange mug please", ("mug", "mug")),
        ("I want the orange.", ("orange", "orange")),
        ("hand me the coffee mug on the left", ("coffee mug", "mug")),
        ("grab a thing I can cut with for me", None),  # a use, however it is worded
        ("hand me something to turn food in a pan", None),
        ("pick up mug", None),  # no determiner: not read as a request for a mug
        ("pick up the object", None),
        ("", None),
    ],
)
def test_the_object_an_instruction_asks_for(text, requested):
    names = CategoryNames({**NAMES, "orange": "orange", "can": "can", "pan": "pan"})
    assert names.requested(text) == requested


def test_every_referring_phrasing_asks_for_its_own_object():
    """Every train and test phrasing of training/reasoning/referring.yaml, with every name and synonym: the
    category, or none for a generic or functional request (whose uses mention pans and what one can do)."""
    from export.speech import categories
    from training.reasoning.referring import PHRASING_SETS, load_referring

    vocabulary, referring = categories(), load_referring()
    names = CategoryNames(vocabulary)
    wheres = [p for sets in referring.where.values() for name in PHRASING_SETS for p in sets[name]]
    things = [p for sets in referring.uses.values() for name in PHRASING_SETS for p in sets[name]]
    wrong = []
    for sets in referring.phrasings.values():
        for frame in (f for name in PHRASING_SETS for f in sets[name]):
            if "{thing}" in frame:
                wrong += [t for t in things if names.requested(frame.format(thing=t)) is not None]
                continue
            for word, category in vocabulary.items():
                for colour in ("orange", "green"):
                    text = frame.format(
                        object=word, colour=colour, size="smaller", where=wheres[len(word) % len(wheres)]
                    )
                    want = (word, category) if "{object}" in frame else None
                    if names.requested(text) != want:
                        wrong.append((text, names.requested(text), want))
    assert wrong == []


def test_no_vocabulary_names_nothing():
    assert CategoryNames({}).first("a knife and a mug") is None


def test_every_reasoning_of_the_templates_names_its_own_category_first():
    from export.speech import categories
    from training.reasoning import load_templates

    names, templates = CategoryNames(categories()), load_templates()
    wrong = [
        (c.name, text)
        for c in templates.categories.values()
        for text in templates.reasoning_phrasings(c)
        if names.first(text) != c.name
    ]
    assert wrong == []


# -- the box ---------------------------------------------------------------------------------------------------
TABLE = 0.7
BLOBS = {  # name -> (v0, v1, u0, u1, height in metres)
    "box": (100, 200, 100, 220, 0.06),
    "can": (300, 380, 400, 520, 0.04),
    "eraser": (220, 260, 300, 330, 0.03),
}


def scene(tilt: float = 0.0, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """640 × 480 depth: a table (tilted: inverse depth changes along u, as a plane's does) with three blobs."""
    us = np.arange(640)[None, :]
    depth = np.repeat(1.0 / (1.0 / TABLE + tilt * (us - 320) / 320), 480, axis=0).astype(np.float32)
    for v0, v1, u0, u1, height in BLOBS.values():
        depth[v0:v1, u0:u1] -= height
    depth += np.random.default_rng(seed).normal(0, noise, depth.shape).astype(np.float32)
    depth[0:10] = np.nan  # a band without readings
    return depth


def box_of(name: str) -> tuple[int, int, int, int]:
    v0, v1, u0, u1, _ = BLOBS[name]
    return u0, v0, u1, v1


@pytest.mark.parametrize("tilt, noise", [(0.0, 0.0), (0.1, 0.0), (0.1, 0.003)])
@pytest.mark.parametrize("name, u, v", [("box", 150, 150), ("can", 519, 300), ("eraser", 310, 240)])
def test_a_centre_on_an_object_gives_its_box(tilt, noise, name, u, v):
    box = object_box(scene(tilt, noise), u, v)
    assert box is not None
    assert np.abs(np.array(box) - box_of(name)).max() <= (0 if noise == 0 else 1)  # noise may move an edge a pixel
    assert box[0] <= u < box[2] and box[1] <= v < box[3]


def test_a_centre_between_objects_gives_the_nearest_within_reach():
    depth = scene()
    assert object_box(depth, 285, 240, radius_px=40) == box_of("eraser")  # 15 px from the eraser, 76 from the box
    assert object_box(depth, 232, 150, radius_px=40) == box_of("box")  # 12 px right of the box, 73 from the eraser
    assert object_box(depth, 232, 150, radius_px=8) is None  # a finger's reach shorter than the gap


def test_a_centre_on_the_table_far_from_everything_gives_none():
    assert object_box(scene(), 600, 450) is None
    assert object_box(scene(0.1, 0.003), 40, 400) is None


def test_no_depth_gives_none():
    assert object_box(np.full((480, 640), np.nan, np.float32), 150, 150) is None
    assert object_box(None, 150, 150) is None
    assert object_box(scene(), 700, 150) is None  # outside the image


def test_the_table_is_the_plane_under_the_objects():
    depth = scene(0.1)
    table = table_depth(depth)
    expected = 1.0 / (1.0 / TABLE + 0.1 * (np.arange(640) - 320) / 320)
    assert np.abs(table[240] - expected).max() < 1e-4  # the objects and the band without readings do not pull it
