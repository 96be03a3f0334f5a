import random

import pytest

from training.reasoning import load_templates
from training.reasoning.referring import REFERRING_FILE, SPATIAL_MARGIN, load_referring, scene_instructions


def row(category, colour="red", size=0.005, x=0.5, y=0.0):
    return {"category": category, "colour": colour, "size": size, "position": [x, y]}


def draw(objects, phrasing="train", seed=0, pool=("banana", "mug")):
    return scene_instructions(objects, "pcd0001", random.Random(seed), phrasing, pool)


def kinds(instructions):
    return {i["kind"]: i for i in instructions}


def test_every_template_category_has_a_use_and_sets_share_no_phrasing():
    ref = load_referring()
    assert set(load_templates().categories) <= set(ref.category_uses)
    for table in (ref.phrasings, ref.where, ref.uses):
        for sets in table.values():
            assert sets["train"] and sets["test"] and not set(sets["train"]) & set(sets["test"])


def test_a_file_missing_a_category_is_refused(tmp_path):
    text = REFERRING_FILE.read_text().replace("  umbrella: [rain]\n", "")
    bad = tmp_path / "referring.yaml"
    bad.write_text(text)
    with pytest.raises(ValueError, match="umbrella"):
        load_referring(bad)


def test_one_object_gets_generic_name_attribute_function_and_absent():
    got = kinds(draw([row("knife", colour="blue")]))
    assert set(got) == {"generic", "name", "attribute", "function", "absent"}
    assert "knife" in got["name"]["text"] and "blue knife" in got["attribute"]["text"]
    assert got["absent"]["target"] is None and got["absent"]["object"] in ("banana", "mug")
    assert all(i["target"] == 0 for k, i in got.items() if k != "absent")


def test_two_of_a_category_are_never_named_alone_but_told_apart():
    objects = [row("mug", "red", 0.005, y=0.1), row("mug", "blue", 0.005, y=-0.1), row("knife", None)]
    for seed in range(20):
        got = kinds(draw(objects, seed=seed))
        assert "generic" not in got
        assert got["name"]["target"] == 2  # only the knife is alone
        attribute = got["attribute"]
        assert attribute["target"] in (0, 1)
        assert ("red" if attribute["target"] == 0 else "blue") in attribute["text"]
        spatial = got["spatial"]
        assert "mug" in spatial["text"]  # two mugs: the relation is among mugs
        left = "left" in spatial["text"]
        assert spatial["target"] == (0 if left else 1)
        assert got["absent"]["object"] == "banana"  # the mug is on the table


def test_a_shared_colour_is_no_attribute_but_a_clear_size_is():
    same = [row("ball", "red", 0.004, x=0.45), row("ball", "red", 0.006, x=0.55)]
    got = kinds(draw(same))
    assert "red" not in got["attribute"]["text"]
    assert got["attribute"]["target"] == (1 if "larger" in got["attribute"]["text"] else 0)
    close_sizes = [row("ball", "red", 0.0050), row("ball", "red", 0.0052, x=0.55)]
    assert "attribute" not in kinds(draw(close_sizes))


def test_spatial_relations_need_a_margin():
    near = [row("cup", x=0.5, y=0.0), row("can", x=0.5 + SPATIAL_MARGIN / 2, y=SPATIAL_MARGIN / 2)]
    assert "spatial" not in kinds(draw(near))
    apart = [row("cup", x=0.4, y=0.0), row("can", x=0.6, y=0.0)]
    spatial = kinds(draw(apart))["spatial"]
    assert ("nearest" in spatial["text"] or "closest" in spatial["text"]) == (spatial["target"] == 0)


def test_a_use_shared_by_two_objects_is_not_asked_for():
    drinks = [row("mug", x=0.4), row("cup", x=0.6)]
    for seed in range(10):
        assert "function" not in kinds(draw(drinks, seed=seed))
    got = kinds(draw([row("mug", x=0.4), row("knife", x=0.6)]))
    assert got["function"]["target"] == (1 if "cut" in got["function"]["text"] else 0)


def test_test_phrasings_never_draw_a_training_frame():
    ref = load_referring()
    objects = [row("mug", "red", y=0.1), row("mug", "blue", y=-0.1), row("knife", None, x=0.7)]
    train_texts = set()
    for seed in range(30):
        for i in draw(objects, "train", seed):
            train_texts.add(i["text"])
    for seed in range(30):
        for i in draw(objects, "test", seed):
            assert i["text"] not in train_texts
    assert ref.phrasings["name"]["test"]
