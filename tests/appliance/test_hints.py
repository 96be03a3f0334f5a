"""The hints: which objects the knowledge says an instruction's words are for (appliance/hints.py)."""

import pytest
import yaml

from appliance.hints import Knowledge, KnowledgeError, knowledge_from_mapping, listing, load_knowledge, stem
from training.reasoning import load_templates
from training.reasoning.referring import load_referring, use_knowledge

KITCHEN = {
    "ignore": ["hand", "me", "need", "grab", "pass"],
    "uses": {
        "whip": {"words": ["People whip cream with.", "something to beat eggs with"], "objects": ["a whisk"]},
        "cut": {
            "words": ["You cut bread with.", "something to cut with"],
            "objects": ["a knife", "a pair of scissors"],
        },
        "drink": {"words": ["People drink tea from.", "something to drink from"], "objects": ["a mug"]},
    },
}


@pytest.fixture(scope="module")
def ours():
    return load_templates(), load_referring()


def objects_of(templates, ref, use: str) -> set[str]:
    return {templates.category(c).a_name for c, uses in ref.category_uses.items() if use in uses}


def test_a_use_is_found_by_its_words_and_the_frame_words_count_for_nothing():
    knowledge = knowledge_from_mapping(KITCHEN)
    assert knowledge.hint("could you pass me a thing to whip cream?") == " Hint: a whisk."
    assert knowledge.hint("I need something that cuts") == " Hint: a knife or a pair of scissors."
    assert knowledge.hint("hand me the red one") == ""  # nothing it knows: no hint at all
    assert knowledge.hint("") == knowledge.hint("hand me") == ""
    assert stem("cuts") == stem("cutting") == "cut" and stem("whisk") == "whisk"
    assert listing(["a", "b", "c"]) == "a, b or c"


def test_a_tie_names_the_objects_of_every_use_in_it_and_too_many_name_none():
    two = {"words": ["things to hold"], "objects": ["a box", "a bag"]}
    knowledge = knowledge_from_mapping({"uses": {"keep": two, "carry": {**two, "objects": ["a tote"]}}})
    assert knowledge.objects_for("something to hold") == ["a box", "a bag", "a tote"]
    crowded = {"uses": {"hold": {"words": ["hold"], "objects": [f"a thing {i}" for i in range(7)]}}}
    assert knowledge_from_mapping(crowded).hint("hold it") == ""  # seven objects say too little


def test_our_knowledge_points_every_train_and_test_use_phrasing_to_its_objects(ours):
    templates, ref = ours
    knowledge = use_knowledge(templates, ref)
    for use, sets in ref.uses.items():
        for phrasing in (*sets["train"], *sets["test"]):
            assert objects_of(templates, ref, use) <= set(knowledge.objects_for(phrasing)), (use, phrasing)
    words = {w for texts in knowledge.words.values() for w in texts}
    assert not words & {p for sets in ref.uses.values() for p in sets["test"]}  # no test phrasing in it
    for name in ("pick up the mug", "Grasp the bowl.", "hand me the ball on the left", "Get the cup for me."):
        assert knowledge.hint(name) == "", name  # train frames and names point to no use


def test_a_named_object_counts_for_nothing_and_a_use_may_still_hold_a_name():
    seal = {"words": ["something to seal a box with"], "objects": ["a tape roll"]}
    data = {"uses": {**KITCHEN["uses"], "seal": seal}, "names": ["box", "orange", "mug", "coffee mug"]}
    knowledge = knowledge_from_mapping(data)
    unnamed = knowledge_from_mapping({"uses": data["uses"]})
    assert unnamed.hint("pick up the box") == " Hint: a tape roll."  # what the names are for
    for said in ("pick up the box", "Grab the orange box please.", "the larger box on the left", "hand me a box"):
        assert knowledge.hint(said) == "", said  # the instruction names its object (an absent one: a refusal)
    assert knowledge.without_names("Grab the orange box please.") == "grab the please."
    assert knowledge.without_names("I'd like the blue coffee mug") == "i'd like the blue"
    assert knowledge.hint("something to seal a box with") == " Hint: a tape roll."  # 'seal' still finds it
    assert knowledge.hint("a mug to drink from") == " Hint: a mug."  # no determiner before it: the words count
    assert knowledge.hint("pick up the boxes") == knowledge.hint("grab the red-orange box") == ""
    assert knowledge.without_names("hand me a mugs") == "hand me a mugs"  # a plural only after 'the', 'my', ...
    assert knowledge.hint("I need something to drink from") == " Hint: a mug."
    assert knowledge_from_mapping(knowledge.to_mapping()) == knowledge


def test_our_names_leave_only_function_instructions_hinted(ours):
    templates, ref = ours
    knowledge = use_knowledge(templates, ref)
    assert {"box", "orange", "mug"} <= set(knowledge.names)
    # each before the names counted: the box's 'seal a box', the toys' 'play', the hammer's own facts
    for said in ("Can you lift the box?", "grab the pink toy block please", "I want the hammer."):
        assert knowledge.hint(said) == "", said
    assert knowledge.hint("could you pass me a thing to play with?") != ""
    # a name used as a verb, two stop words after a determiner, still counts: 'tape', 'lock', 'glue', 'cover'
    for said, meant in (
        ("a thing to tape with", "a tape roll"),
        ("I need a thing to lock with", "a padlock"),
        ("a thing to glue paper", "a glue stick"),
        ("a thing to cover a pot", "a lid"),
        ("I need the thing that covers a pot", "a lid"),  # 'that' + a verb: a relative clause, not a name
    ):
        assert meant in knowledge.objects_for(said), said


def test_a_left_out_phrasing_is_not_in_the_knowledge(ours):
    templates, ref = ours
    assert "a toy" in use_knowledge(templates, ref).words["play"]
    assert "a toy" not in use_knowledge(templates, ref, frozenset({"a toy"})).words["play"]


def test_a_user_teaches_a_new_use_by_adding_a_row(tmp_path):
    data = {"uses": {**KITCHEN["uses"], "water": {"words": ["You water plants with."], "objects": ["a watering can"]}}}
    path = tmp_path / "knowledge.yaml"
    path.write_text(yaml.safe_dump(data))
    knowledge = load_knowledge(path)
    assert knowledge.hint("something to water the plants") == " Hint: a watering can."
    assert knowledge_from_mapping(knowledge.to_mapping()) == knowledge


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a mapping with a 'uses' table"),
        ({"uses": {}, "extra": 1}, "unknown knowledge keys"),
        ({"uses": {"cut": {"words": ["cut"]}}}, "exactly 'words' and 'objects'"),
        ({"uses": {"cut": {"words": "cut", "objects": ["a knife"]}}}, "'words' must be a list"),
        ({"uses": {"cut": {"words": ["cut"], "objects": [""]}}}, "'objects' must be a list"),
        ({"uses": {"cut": {"words": ["cut"], "objects": []}}}, "no objects"),
        ({"uses": {"cut": {"words": ["the it"], "objects": ["a knife"]}}}, "no word to look up"),
        ({"ignore": "hand", "uses": {}}, "'ignore' must be a list"),
        ({"names": ["box", ""], "uses": {}}, "'names' must be a list of object names"),
    ],
)
def test_a_malformed_table_names_the_bad_entry(data, message):
    with pytest.raises(KnowledgeError, match=message):
        knowledge_from_mapping(data)


def test_a_missing_or_broken_file_is_named(tmp_path):
    with pytest.raises(KnowledgeError, match="missing.yaml"):
        load_knowledge(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("uses: [unclosed\n")
    with pytest.raises(KnowledgeError, match="broken.yaml"):
        load_knowledge(broken)
    with pytest.raises(KnowledgeError, match="uses without both"):
        Knowledge({"cut": ("cut",)}, {})
