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
