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


def test_load_refuses_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_llava(tmp_path)
