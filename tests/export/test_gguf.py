"""The GGUF writer: tensor map, RoPE permutation, tokenizer and logits parity with torch (llama.cpp F32)."""

import json
import random

import numpy as np
import pytest

from appliance.runtime.llm import LlamaSettings, TextModel
from export.gguf import ExportError, gguf_name, read_vocab, rope_permute, text_config, write_gguf

pytest.importorskip("llama_cpp")
torch = pytest.importorskip("torch")

PROMPTS = [
    "The object is a mug. It is a hollow cylinder with a handle. [0.51, 0.43], -0.78",
    "USER: pick up the screwdriver by its handle ASSISTANT:",
    "Grasp point coordinates: [0.25, 0.75] Rotation angle in radians: 1.57",
    "a b  c\n\td 0123456789 !?",
]


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    """(checkpoint, F32 GGUF path, llama.cpp model with exact settings)."""
    path = write_gguf(tiny_checkpoint, tmp_path_factory.mktemp("gguf") / "llm-f32.gguf", "f32")
    model = TextModel(path, LlamaSettings.exact(n_ctx=256, n_batch=64))
    yield tiny_checkpoint, path, model
    model.close()


def _rotate_half_rope(x, pos, base=10000.0):
    """HF Llama's RoPE on one head's vector (first half / second half pairs)."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(pos * inv), np.sin(pos * inv)
    a, b = x[: d // 2], x[d // 2 :]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin])


def _interleaved_rope(x, pos, base=10000.0):
    """llama.cpp's RoPE (normal mode): adjacent pairs (0,1), (2,3), ..."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(pos * inv), np.sin(pos * inv)
    a, b = x[0::2], x[1::2]
    out = np.empty_like(x)
    out[0::2], out[1::2] = a * cos - b * sin, b * cos + a * sin
    return out


def test_rope_permutation_makes_llama_cpp_rope_equal_hf_rope():
    rng = np.random.default_rng(0)
    heads, head_dim, hidden = 2, 8, 16
    weight = rng.normal(size=(heads * head_dim, hidden))
    x = rng.normal(size=hidden)
    permuted = rope_permute(weight, heads)
    for pos in (0, 1, 7):
        for h in range(heads):
            rows = slice(h * head_dim, (h + 1) * head_dim)
            hf = _rotate_half_rope(weight[rows] @ x, pos)
            cpp = _interleaved_rope(permuted[rows] @ x, pos)
            # the permutation reorders a head's outputs; dot products (attention scores) are what must agree
            assert np.allclose(np.sort(hf), np.sort(cpp))
    q, k = weight, rng.normal(size=(heads * head_dim, hidden))
    qp, kp = rope_permute(q, heads), rope_permute(k, heads)
    for pq, pk in ((3, 1), (5, 5), (9, 2)):
        hf = _rotate_half_rope(q[:head_dim] @ x, pq) @ _rotate_half_rope(k[:head_dim] @ x, pk)
        cpp = _interleaved_rope(qp[:head_dim] @ x, pq) @ _interleaved_rope(kp[:head_dim] @ x, pk)
        assert hf == pytest.approx(cpp, rel=1e-9)


def test_tensor_table():
    assert gguf_name("model.language_model.layers.3.self_attn.q_proj.weight") == ("blk.3.attn_q.weight", "rope_q")
    assert gguf_name("language_model.model.layers.0.mlp.down_proj.weight") == ("blk.0.ffn_down.weight", None)
    assert gguf_name("language_model.lm_head.weight") == ("output.weight", None)
    assert gguf_name("lm_head.weight") == ("output.weight", None)
    assert gguf_name("model.vision_tower.vision_model.embeddings.patch_embedding.weight") is None
    assert gguf_name("model.multi_modal_projector.linear_1.weight") is None
    with pytest.raises(ExportError, match="no GGUF name"):
        gguf_name("model.language_model.layers.0.self_attn.q_norm.weight")


def test_architecture_checks():
    with pytest.raises(ExportError, match="LLaVA"):
        text_config({"model_type": "llama"})
    with pytest.raises(ExportError, match="'mistral' is not supported"):
        text_config({"model_type": "llava", "text_config": {"model_type": "mistral"}})
    with pytest.raises(ExportError, match="RoPE scaling"):
        text_config(
            {"model_type": "llava", "text_config": {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}}
        )


def test_missing_or_bad_directories(tmp_path):
    with pytest.raises(ExportError, match="no config.json"):
        write_gguf(tmp_path, tmp_path / "x.gguf")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {}}))
    with pytest.raises(ExportError, match="tokenizer.json"):
        write_gguf(tmp_path, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_logits_equal_torch_on_several_prompts(exported):
    from training.model import load_llava

    checkpoint, _, llm = exported
    model, _ = load_llava(checkpoint)
    model.eval()
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt, add_bos=True, start=True)
        llm.truncate(0)
        llm.eval_tokens(ids)
        with torch.no_grad():
            want = model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        got = llm.logits()
        assert np.abs(got - want).max() / np.abs(want).max() <= 1e-3, prompt


def test_tokenization_equals_hf_on_template_strings(exported):
    from transformers import AutoTokenizer

    from training.model import PROMPT_TEMPLATE
    from training.reasoning import load_templates
    from training.reasoning.corpus import corpus

    checkpoint, _, llm = exported
    hf = AutoTokenizer.from_pretrained(checkpoint)
    lines = list(corpus(load_templates(), seed=3))
    sample = random.Random(0).sample(lines, 300)
    sample += [PROMPT_TEMPLATE.format(instruction=line) for line in sample[:20]] + ["", " leading space", "x\n\ny"]
    mismatches = [s for s in sample if hf(s)["input_ids"] != llm.tokenize(s, add_bos=True, start=True)]
    assert mismatches == []


def test_metadata_special_tokens_and_chat_template(exported):
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    checkpoint, path, llm = exported
    reader = GGUFReader(str(path))
    fields = reader.fields
    hf = AutoTokenizer.from_pretrained(checkpoint)

    def scalar(key):
        return fields[key].parts[fields[key].data[0]][0]

    assert scalar("tokenizer.ggml.bos_token_id") == hf.bos_token_id
    assert scalar("tokenizer.ggml.eos_token_id") == hf.eos_token_id
    assert llm.eos == hf.eos_token_id
    assert llm.token_id("<image>") == hf.convert_tokens_to_ids("<image>")
    template = bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
    assert "ASSISTANT:" in template
    assert llm.piece(hf.bos_token_id) == b""  # control tokens render as nothing


def test_vocab_is_padded_to_the_embedding_rows(tiny_spm_checkpoint):
    vocab = read_vocab(tiny_spm_checkpoint, 1100)
    assert len(vocab.tokens) == 1100 and vocab.tokens[-1] == "[PAD1099]"
    with pytest.raises(ExportError, match="vocabulary"):
        read_vocab(tiny_spm_checkpoint, 10)


def test_tensors_are_written_one_at_a_time(tiny_checkpoint, tmp_path, monkeypatch):
    """Headers first from the files' metadata, then each tensor loaded, written and dropped: a 7B model's 14 GB
    never sit in memory together."""
    import export.gguf as gguf_module

    loaded, alive = [], []
    real = gguf_module._load_tensor

    def spy(path, name, heads):
        array = real(path, name, heads)
        loaded.append(name)
        alive.append(len(loaded))
        return array

    monkeypatch.setattr(gguf_module, "_load_tensor", spy)
    plan = gguf_module.text_tensors(
        tiny_checkpoint, text_config(json.loads((tiny_checkpoint / "config.json").read_text()))
    )
    assert loaded == []  # planning reads no tensor data
    path = write_gguf(tiny_checkpoint, tmp_path / "streamed.gguf", "f16")
    assert len(loaded) == len(plan) and path.is_file()
    from gguf import GGUFReader

    shapes = {t.name: tuple(int(d) for d in reversed(t.shape)) for t in GGUFReader(str(path)).tensors}
    assert all(shapes[t.name] == t.shape for t in plan)


def test_a_tensor_beyond_f16_range_is_a_clear_error(tmp_path):
    from export.gguf import PlannedTensor, TextConfig, Vocab, write_llama

    config = TextConfig(8, 1, 16, 2, 2, 4, 1e-6, 10000.0, 64, 4, False)
    vocab = Vocab(
        "spm", ["<unk>", "<s>", "</s>", "a"], [2, 3, 3, 1], [0.0] * 4, [], {"bos": 1, "eos": 2}, True, "never", None
    )
    big = PlannedTensor("token_embd.weight", (4, 8), lambda: np.full((4, 8), 1e6, np.float32))
    with pytest.raises(ExportError, match="beyond F16"):
        write_llama(tmp_path / "x.gguf", config, vocab, [big], "f16")
    assert not (tmp_path / "x.gguf").exists()
