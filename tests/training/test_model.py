"""The tiny LLaVA and its tokenizers: built from scratch, saved and loaded like a real checkpoint."""

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from training.model import PROMPT_TEMPLATE, TinyConfig, build_tiny, count_parameters, load_llava  # noqa: E402
from training.reasoning import load_templates  # noqa: E402
from training.reasoning.corpus import corpus  # noqa: E402
from training.tokenizer import IMAGE, train_tokenizer  # noqa: E402

LINES = list(corpus(load_templates(), poses=300))


@pytest.fixture(scope="module", params=["spm", "bpe"])
def tokenizer(request):
    return train_tokenizer(LINES, request.param, vocab_size=700)


def test_numbers_are_split_into_digits(tokenizer):
    tokens = tokenizer.tokenize("[0.512, 0.433], -0.785")
    digits = [t.replace("▁", "").replace("Ġ", "") for t in tokens]
    assert [d for d in digits if d.isdigit()] == list("051204330785")
    assert all(len(d) <= 1 for d in digits if any(c.isdigit() for c in d))


def test_round_trip_on_the_corpus_and_beyond(tokenizer):
    rng = random.Random(0)
    # (a leading space is dropped by the SentencePiece-style decoder, as with LLaMA's own tokenizer)
    for text in rng.sample(LINES, 200) + ["Ünïcödé ✓ never seen", "two  spaces  inside"]:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in tokenizer("✓ ∑ 你好", add_special_tokens=False).input_ids


def test_special_tokens(tokenizer):
    ids = tokenizer(f"{IMAGE}\npick up the mug").input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert ids[1] == tokenizer.convert_tokens_to_ids(IMAGE)
    assert tokenizer.image_token == IMAGE


def test_tiny_llava_builds_saves_and_loads_like_a_real_checkpoint(tmp_path):
    config = TinyConfig(tokenizer="bpe")
    model, processor = build_tiny(config)
    assert 2e6 < count_parameters(model) < 10e6
    assert config.image_tokens == 64
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = load_llava(tmp_path)
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    prompt = PROMPT_TEMPLATE.format(instruction="pick up the mug")
    inputs = loaded_processor(images=image, text=prompt, return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_index).sum() == 64
    model.eval()
    loaded.eval()
    with torch.no_grad():
        a = model(**inputs).logits
        b = loaded(**inputs).logits
    assert a.shape[-1] == len(processor.tokenizer)
    assert torch.allclose(a, b, atol=1e-5)


def test_a_length_limit_saved_with_the_tokenizer_cuts_no_prompt(tmp_path):
    """Checkpoints made before session 15 saved the language stage's ``max_length`` (96) with the tokenizer, and the
    processor then cut every prompt, the 64 image tokens included, at 96 tokens."""
    import json

    model, processor = build_tiny(TinyConfig(tokenizer="spm"))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.update(max_length=96, truncation_strategy="longest_first")  # what such a checkpoint holds ...
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    backend = json.loads((tmp_path / "tokenizer.json").read_text())
    backend["truncation"] = {"direction": "Right", "max_length": 96, "strategy": "LongestFirst", "stride": 0}
    (tmp_path / "tokenizer.json").write_text(json.dumps(backend))  # ... in both files
    prompt = PROMPT_TEMPLATE.format(instruction="could you pass me a thing to take notes with? " * 3)
    _, loaded = load_llava(tmp_path)
    ids = loaded(images=np.zeros((224, 224, 3), np.uint8), text=prompt, return_tensors="pt")["input_ids"][0]
    assert len(ids) > 96
    assert loaded.tokenizer.decode(ids[-12:]).endswith("ASSISTANT:")
    assert len(loaded.tokenizer(prompt * 2)["input_ids"]) > 96 and loaded.tokenizer.backend_tokenizer.truncation is None


def test_load_refuses_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_llava(tmp_path)


# llava-hf/llava-1.5-7b-hf's config.json (the published values our preset must have), token ids aside: ours come
# from our own tokenizer, padded to the same 32064-row vocabulary.
LLAVA_15_7B = {
    "projector_hidden_act": "gelu",
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "image_seq_length": 576,
    "tie_word_embeddings": False,
    "vision_config": {
        "model_type": "clip_vision_model",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    },
    "text_config": {
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "vocab_size": 32064,
        "hidden_act": "silu",
        "rope_theta": 10000.0,
    },
}


def test_the_7b_preset_has_llava_1_5_7b_hf_published_config():
    from training.model import PRESETS, llava_config, parameter_estimate

    shape = PRESETS["llava-1.5-7b"]
    tokenizer = train_tokenizer(LINES, "spm", vocab_size=700)
    config = llava_config(shape, tokenizer).to_dict()
    for key, want in LLAVA_15_7B.items():
        if isinstance(want, dict):
            got = config[key]
            rope = (got.get("rope_parameters") or {}).get("rope_theta", got.get("rope_theta"))
            for sub, value in want.items():
                assert (rope if sub == "rope_theta" else got[sub]) == value, f"{key}.{sub}"
        else:
            assert config[key] == want, key
    assert shape.image_tokens == 576 and shape.dtype == "bfloat16"
    assert abs(parameter_estimate(shape) - 7.063e9) / 7.063e9 < 1e-3  # llava-1.5-7b-hf: 7.06 B parameters
    assert shape.with_layers(4).text_layers == 4 and shape.with_layers(4).text_hidden == 4096


def test_a_narrow_stand_in_of_the_7b_preset_sees_576_image_tokens_from_the_penultimate_layer(tmp_path):
    """Every shape rule of the preset (336 px, patch 14, CLS dropped, layer −2, padded vocabulary, bfloat16
    shards) on widths small enough for the default suite."""
    import dataclasses

    from training.model import PRESETS, main

    narrow = dataclasses.replace(
        PRESETS["llava-1.5-7b"], vision_hidden=32, vision_intermediate=64, vision_layers=3, vision_heads=2,
        projection_dim=32, text_hidden=64, text_intermediate=128, text_layers=2, text_heads=4, text_kv_heads=4,
    )  # fmt: skip
    model, processor = build_tiny(narrow)
    model.save_pretrained(tmp_path, max_shard_size="1MB")
    processor.save_pretrained(tmp_path)
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1  # shards, as a real checkpoint
    loaded, loaded_processor = load_llava(tmp_path)
    assert next(loaded.parameters()).dtype == torch.bfloat16  # kept as saved, never widened to float32
    assert loaded.config.text_config.vocab_size == 32064 > len(loaded_processor.tokenizer)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    inputs = loaded_processor(
        images=image, text=PROMPT_TEMPLATE.format(instruction="pick up the mug"), return_tensors="pt"
    )
    assert (inputs["input_ids"] == loaded.config.image_token_index).sum() == 576
    assert inputs["pixel_values"].shape[-2:] == (336, 336)
    with torch.no_grad():
        features = loaded.get_image_features(pixel_values=inputs["pixel_values"].to(torch.bfloat16))
        features = getattr(features, "pooler_output", features)
        hidden = loaded.model.vision_tower(inputs["pixel_values"].to(torch.bfloat16), output_hidden_states=True)
        want = loaded.model.multi_modal_projector(hidden.hidden_states[-2][:, 1:])
    assert torch.stack(list(features)).reshape(1, 576, 64).float().allclose(want.float())
    assert main(["--preset", "llava-1.5-7b", "--layers", "0", "--out", str(tmp_path / "x")]) == 2  # a clear error
