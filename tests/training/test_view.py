import json

import pytest

from training.view import ModelView


def test_prompt_order_places_the_image_token_and_old_views_are_image_first(tmp_path):
    assert ModelView().prompt_template == "USER: <image>\n{instruction} ASSISTANT:"
    after = ModelView(prompt_order="instruction")
    assert after.prompt_template == "USER: {instruction}\n<image> ASSISTANT:"
    assert after.first_turn("pick up the mug") == "pick up the mug\n<image>"
    (tmp_path / "view.json").write_text(json.dumps({"variant": "nr-a", "decimals": 2, "size": 224, "crop": 320}))
    assert ModelView.load(tmp_path).prompt_order == "image"  # written before the field existed
    after.save(tmp_path / "view.json")
    assert ModelView.load(tmp_path) == after
    with pytest.raises(ValueError, match="prompt_order must be one of"):
        ModelView(prompt_order="sideways")


def test_a_view_with_knowledge_hints_every_first_instruction_and_keeps_the_template_plain(tmp_path):
    knowledge = {"uses": {"whip": {"words": ["People whip cream with."], "objects": ["a whisk"]}}}
    view = ModelView(variant="rt", decimals=2, knowledge=knowledge)
    asked = "could you pass me a thing to whip cream?"
    assert view.first_turn(asked) == f"<image>\n{asked} Hint: a whisk."
    assert view.prompt(asked) == f"USER: <image>\n{asked} Hint: a whisk. ASSISTANT:"
    assert view.prompt_template == "USER: <image>\n{instruction} ASSISTANT:"  # the bundle's: the runtime hints
    assert view.first_turn("pick up the mug") == "<image>\npick up the mug"
    assert ModelView().prompt(asked) == f"USER: <image>\n{asked} ASSISTANT:"  # no knowledge, no hint
    view.save(tmp_path / "view.json")
    assert ModelView.load(tmp_path) == view and ModelView.load(tmp_path).first_turn(asked).endswith("a whisk.")
    with pytest.raises(ValueError, match="no objects"):
        ModelView(knowledge={"uses": {"whip": {"words": ["whip"], "objects": []}}})
    (tmp_path / "view.json").write_text(
        json.dumps({"knowledge": {"uses": {"whip": {"words": ["whip"], "objects": []}}}})
    )
    with pytest.raises(ValueError, match="view.json: knowledge: use 'whip': no objects"):
        ModelView.load(tmp_path)
