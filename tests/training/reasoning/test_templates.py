import random
import re

import pytest

from appliance.answer import AnswerFormat
from appliance.grasp import GraspPose
from training.reasoning import load_templates

T = load_templates()
NEGATIONS = ("not", "never", "avoid", "away from", "rather than", "instead of")
# The household categories the simulated object library renders (issue [B]).
SYNTHETIC = {
    "mug",
    "cup",
    "bottle",
    "can",
    "ball",
    "box",
    "book",
    "screwdriver",
    "hammer",
    "spoon",
    "spatula",
    "knife",
    "scissors",
    "sunglasses",
    "banana",
    "pen",
    "toy block",
    "bowl",
    "plate",
}


def test_taxonomy_size_and_synthetic_coverage():
    assert len(T.categories) == 74
    assert SYNTHETIC <= set(T.categories)
    assert {c.name for c in T.categories.values() if c.synthetic} == SYNTHETIC


@pytest.mark.parametrize("name", sorted(T.categories) + ["object"])
def test_every_category_has_five_distinct_phrasings_that_parse(name):
    category = T.category(name)
    phrasings = T.reasoning_phrasings(category)
    assert len(set(phrasings)) >= 5
    fmt = AnswerFormat("rt")
    for text in phrasings:
        assert category.name in text  # the object is named, so the stated category can be read back
        assert fmt.parse(fmt.render(GraspPose(0.5, 0.5, 0.1), text)).reasoning == text


def mentions_unnegated(text: str, word: str) -> bool:
    for match in re.finditer(rf"\b{re.escape(word)}\b", text):
        before = text[max(0, match.start() - 40) : match.start()]
        clause = re.split(r"[,.;:]", before)[-1]
        if not any(n in clause for n in NEGATIONS):
            return True
    return False


@pytest.mark.parametrize("name", sorted(T.categories) + ["object"])
def test_strategies_agree_with_grasp_semantics(name):
    category = T.category(name)
    assert set(category.grasp_at) <= set(category.parts)
    for strategy in category.strategy:
        assert any(re.search(rf"\b{re.escape(p)}\b", strategy) for p in category.grasp_at), strategy
        for word in category.avoid:
            assert not mentions_unnegated(strategy, word), f"{name}: {strategy!r} grasps the {word}"
    for text in T.reasoning_phrasings(category):
        for word in category.avoid:
            shape_free = text
            for shape in category.shape:
                shape_free = shape_free.replace(shape, "")
            assert not mentions_unnegated(shape_free, word), text


def test_semantics_check_catches_a_contradiction():
    assert mentions_unnegated("grip the blade firmly", "blade")
    assert not mentions_unnegated("grip the handle and not the blade", "blade")
    assert not mentions_unnegated("keep away from the blade", "blade")


def test_instruction_templates_cover_typed_and_spoken_forms():
    instructions = [t for kind in ("generic", "object", "part") for t in T.instructions[kind]]
    assert len(instructions) >= 20
    assert any(t == t.lower() and not re.search(r"[.?!,]", t) for t in instructions)  # spoken form
    assert all("{part}" in t and "{object}" in t for t in T.instructions["part"])
    rng = random.Random(0)
    mug = T.category("mug")
    assert "handle" in T.instruction_for(mug, rng, part="handle")


def test_no_template_text_can_be_taken_for_a_pose():
    texts = [s for c in list(T.categories.values()) + [T.fallback] for s in (*c.shape, *c.strategy, *c.synonyms)]
    texts += list(T.reasoning) + [t for ts in T.instructions.values() for t in ts]
    assert not [t for t in texts if "[" in t or "]" in t]


@pytest.mark.parametrize(
    "object_name, category",
    [
        ("white coffee mug", "mug"),
        ("Red Scissors", "scissors"),
        ("sneaker", "shoe"),
        ("butter knife", "knife"),
        ("blue marker", "pen"),
        ("toy block", "toy block"),
        ("mystery item", "object"),
        (None, "object"),
    ],
)
def test_object_names_map_to_categories(object_name, category):
    assert T.category_for(object_name).name == category


def test_bad_category_file_is_named(tmp_path):
    bad = tmp_path / "categories.yaml"
    bad.write_text("categories:\n  - name: mug\n    colour: red\nfallback: {}\n")
    with pytest.raises(ValueError, match=r"category 0 \(mug\): unknown keys \['colour'\]"):
        load_templates(bad)
