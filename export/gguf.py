"""The language model of a merged LLaVA checkpoint → a llama-architecture GGUF, tokenizer inside.

    python -m export.gguf --model runs/rt-merged --out runs/llm-f16.gguf --dtype f16

Formats are tables here: ``PREFIXES`` says where a checkpoint keeps its text
model, ``TENSORS`` maps Hugging Face tensor names to llama.cpp's, ``TOKENIZERS``
says how each tokenizer family is written. A new layout is new rows.

- Tensors: q_proj/k_proj are permuted from HF's rotate-half RoPE layout to
  the interleaved pairs llama.cpp rotates. Norms stay F32; matrices take the
  requested dtype (llama.cpp's quantizer then makes Q4_K_M etc. from F16/F32).
- Tokenizer: ``spm`` (SentencePiece-style, "▁" word marks, byte fallback, as
  LLaMA-2 / LLaVA-1.5 and our ``spm``) becomes llama.cpp's ``llama`` vocab with
  scores from the BPE merge ranks; ``bpe`` (byte-level, as GPT-2 / LLaMA-3 and
  our ``bpe``) becomes ``gpt2`` with its merges and the ``gpt-2`` pre-tokenizer.
  Special tokens are CONTROL (``<unk>`` UNKNOWN), ``<0xNN>`` are BYTE.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from appliance.runtime.llm import PREPEND_FIRST_KEY  # the GGUF key the runtime reads: defined there, once
from training.progress import progress_bar

log = logging.getLogger(__name__)

# Where the text model's tensors live, by checkpoint layout: prefix -> replacement.
PREFIXES = (
    ("model.language_model.", "model."),  # transformers >= 4.52 LlavaForConditionalGeneration
    ("language_model.model.", "model."),  # older LLaVA checkpoints (e.g. llava-1.5-7b-hf)
    ("language_model.lm_head.", "lm_head."),
    ("lm_head.", "lm_head."),
)
# HF name (after PREFIXES) -> (GGUF name, how to transform).
TENSORS = (
    (r"model\.embed_tokens\.weight", "token_embd.weight", None),
    (r"model\.norm\.weight", "output_norm.weight", None),
    (r"lm_head\.weight", "output.weight", None),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", "blk.{}.attn_norm.weight", None),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.weight", "blk.{}.attn_q.weight", "rope_q"),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.weight", "blk.{}.attn_k.weight", "rope_k"),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.weight", "blk.{}.attn_v.weight", None),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", "blk.{}.attn_output.weight", None),
    (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", "blk.{}.ffn_norm.weight", None),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", "blk.{}.ffn_gate.weight", None),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", "blk.{}.ffn_up.weight", None),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", "blk.{}.ffn_down.weight", None),
)
SKIPPED = ("model.vision_tower.", "vision_tower.", "model.multi_modal_projector.", "multi_modal_projector.")
"""The vision side goes to ONNX (export.vision), not to the GGUF."""
SUPPORTED_TEXT_MODELS = ("llama",)
DTYPES = ("f32", "f16")
TOKENIZERS = {  # family -> (tokenizer.ggml.model, tokenizer.ggml.pre)
    "spm": ("llama", None),
    "bpe": ("gpt2", "gpt-2"),
}


class ExportError(ValueError):
    """A checkpoint this exporter cannot turn into a GGUF; the message says why."""


@dataclass(frozen=True)
class TextConfig:
    """The Llama hyper-parameters llama.cpp needs."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    context: int
    vocab: int
    tied: bool


def text_config(config: dict) -> TextConfig:
    """Read the text model's config from a LLaVA ``config.json``; refuse what llama.cpp's llama cannot run."""
    if config.get("model_type") != "llava":
        raise ExportError(f"expected a LLaVA checkpoint, config.json says model_type={config.get('model_type')!r}")
    text = config.get("text_config") or {}
    kind = text.get("model_type", "llama")
    if kind not in SUPPORTED_TEXT_MODELS:
        raise ExportError(f"text model {kind!r} is not supported (supported: {', '.join(SUPPORTED_TEXT_MODELS)})")
    rope = text.get("rope_parameters") or text.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ExportError(f"RoPE scaling {rope.get('rope_type') or rope.get('type')!r} is not supported")
    heads = text.get("num_attention_heads", 32)
    hidden = text.get("hidden_size", 4096)
    return TextConfig(
        hidden=hidden,
        layers=text.get("num_hidden_layers", 32),
        intermediate=text.get("intermediate_size", 11008),
        heads=heads,
        kv_heads=text.get("num_key_value_heads") or heads,
        head_dim=text.get("head_dim") or hidden // heads,
        rms_eps=text.get("rms_norm_eps", 1e-6),
        rope_theta=rope.get("rope_theta", text.get("rope_theta", 10000.0)),
        context=text.get("max_position_embeddings", 4096),
        vocab=text.get("vocab_size", 32000),
        tied=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
    )


def rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half q/k rows → llama.cpp's interleaved pairs, per head."""
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def gguf_name(hf_name: str) -> tuple[str, str | None] | None:
    """The GGUF name and transform of a checkpoint tensor; None for vision tensors; ExportError if unknown."""
    if hf_name.startswith(SKIPPED):
        return None
    for prefix, replacement in PREFIXES:
        if hf_name.startswith(prefix):
            hf_name = replacement + hf_name[len(prefix) :]
            break
    for pattern, target, transform in TENSORS:
        match = re.fullmatch(pattern, hf_name)
        if match:
            return target.format(*match.groups()), transform
    if hf_name.endswith("rotary_emb.inv_freq"):
        return None
    raise ExportError(f"tensor {hf_name!r} has no GGUF name: this text model is not a plain Llama")


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor the writer will need: its GGUF name and shape now, its data when ``load()`` is called.

    The writer lays out every tensor's header first and then loads, converts and writes one tensor at a
    time, so a 7B model (14 GB in F16) is written with one tensor in memory, never all of them."""

    name: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]


def _checkpoint_files(model_dir: Path) -> list[Path]:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ExportError(
            f"{model_dir} has no .safetensors weights (merge LoRA adapters first: python -m training.merge)"
        )
    return files


def checkpoint_dtypes(model_dir: Path) -> set[str]:
    """The dtypes the checkpoint's weights are stored in (``F32``, ``BF16``, ``F16``), from the file headers."""
    found = set()
    for path in _checkpoint_files(model_dir):
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        found |= {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    return found


def text_tensors(model_dir: Path, config: TextConfig) -> list[PlannedTensor]:
    """The text model's tensors in llama.cpp's names and layout (q/k permuted), planned from the file headers."""
    from safetensors import safe_open

    planned = []
    for path in _checkpoint_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                mapped = gguf_name(name)
                if mapped is None:
                    continue
                target, transform = mapped
                heads = {"rope_q": config.heads, "rope_k": config.kv_heads}.get(transform)
                shape = tuple(f.get_slice(name).get_shape())
                planned.append(PlannedTensor(target, shape, partial(_load_tensor, path, name, heads)))
    needed = {"token_embd.weight", "output_norm.weight"} | (set() if config.tied else {"output.weight"})
    missing = needed - {t.name for t in planned}
    if missing:
        raise ExportError(f"{model_dir}: missing tensors {sorted(missing)}")
    return planned


def _load_tensor(path: Path, name: str, rope_heads: int | None) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        array = f.get_tensor(name).float().numpy()
    return rope_permute(array, rope_heads) if rope_heads else array


@dataclass(frozen=True)
class Vocab:
    """The tokenizer as llama.cpp stores it."""

    family: str
    tokens: list[str]
    types: list[int]
    scores: list[float]
    merges: list[str]
    special: dict[str, int]
    """bos / eos / unk / pad → id (those the tokenizer has)."""
    add_bos: bool
    prepend: str
    """spm: where "▁" is prepended — ``always`` (each text run, llama.cpp's add_space_prefix, a LLaMA-2
    ``Prepend`` normalizer), ``first`` (start of the text only, unless it starts with a space: a Metaspace
    ``first`` scheme, written as ``PREPEND_FIRST_KEY`` for our runtime) or ``never``."""
    chat_template: str | None


def tokenizer_family(tokenizer: dict) -> str:
    """``spm`` or ``bpe`` from a tokenizer.json, by its pre-tokenizer / normalizer."""
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE":
        raise ExportError(f"tokenizer model {model.get('type')!r} is not supported (BPE only)")
    text = json.dumps([tokenizer.get("pre_tokenizer"), tokenizer.get("normalizer")])
    if '"ByteLevel"' in text:
        return "bpe"
    if '"Metaspace"' in text or "\u2581" in text or model.get("byte_fallback"):
        return "spm"
    raise ExportError("tokenizer.json is neither SentencePiece-style (Metaspace) nor byte-level BPE")


def _merge_pairs(model: dict) -> list[tuple[str, str]]:
    pairs = []
    for merge in model.get("merges") or []:
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        pairs.append((a, b))
    return pairs


def read_vocab(model_dir: Path, n_vocab: int) -> Vocab:
    """Read tokenizer.json (+ tokenizer_config.json, chat template) into llama.cpp's form, padded to ``n_vocab``."""
    from gguf import TokenType

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"{model_dir} has no tokenizer.json (a fast tokenizer is needed)")
    tokenizer = json.loads(path.read_text())
    tok_config = _read_json(Path(model_dir) / "tokenizer_config.json")
    family = tokenizer_family(tokenizer)
    model = tokenizer["model"]
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in tokenizer.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if max(by_id) >= n_vocab:
        raise ExportError(f"tokenizer has id {max(by_id)} but the model's vocabulary is {n_vocab}")
    pairs = _merge_pairs(model)
    rank = {}
    for r, (a, b) in enumerate(pairs):
        rank.setdefault(a + b, r)
    tokens, types, scores = [], [], []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]"), types.append(TokenType.UNUSED), scores.append(-1e9)
            continue
        if i in added and added[i].get("special", True):
            kind = TokenType.UNKNOWN if text == model.get("unk_token", "<unk>") else TokenType.CONTROL
        elif i in added:
            kind = TokenType.USER_DEFINED
        elif family == "spm" and re.fullmatch(r"<0x[0-9A-F]{2}>", text):
            kind = TokenType.BYTE
        else:
            kind = TokenType.NORMAL
        tokens.append(text), types.append(int(kind)), scores.append(-float(rank[text] + 1) if text in rank else 0.0)
    special = {}
    for role in ("bos", "eos", "unk", "pad"):
        name = _token_text(tok_config.get(f"{role}_token"))
        ids = [i for i, t in by_id.items() if t == name] if name else []
        if ids:
            special[role] = ids[0]
    post = json.dumps(tokenizer.get("post_processor"))
    bos_text = by_id.get(special.get("bos", -1), "\0")
    add_bos = bool(tok_config.get("add_bos_token", json.dumps(bos_text) in post))
    return Vocab(
        family,
        tokens,
        types,
        scores,
        [f"{a} {b}" for a, b in pairs] if family == "bpe" else [],
        special,
        add_bos,
        _prepend_scheme(tokenizer) if family == "spm" else "never",
        _chat_template(Path(model_dir), tok_config),
    )


def _prepend_scheme(tokenizer: dict) -> str:
    """Where a SentencePiece-style tokenizer.json prepends "▁": always, first or never."""
    if '"Prepend"' in json.dumps(tokenizer.get("normalizer")):
        return "always"
    found = re.search(r'"prepend_scheme": "(\w+)"', json.dumps(tokenizer.get("pre_tokenizer")))
    if found:
        return found.group(1)
    return "always" if '"add_prefix_space": true' in json.dumps(tokenizer.get("pre_tokenizer")) else "never"


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _chat_template(model_dir: Path, tok_config: dict) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    return _read_json(model_dir / "chat_template.json").get("chat_template") or tok_config.get("chat_template")


def _write_vocab(writer, vocab: Vocab) -> None:
    model, pre = TOKENIZERS[vocab.family]
    writer.add_tokenizer_model(model)
    if pre:
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_scores(vocab.scores)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    for role, token_id in vocab.special.items():
        getattr(writer, f"add_{role}_token_id")(token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(False)
    if vocab.family == "spm":
        writer.add_add_space_prefix(vocab.prepend == "always")
        writer.add_bool(PREPEND_FIRST_KEY, vocab.prepend == "first")
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)


def write_gguf(model_dir: Path, out: Path, dtype: str = "f16", progress: bool = False) -> Path:
    """Write the checkpoint's text model and tokenizer as a llama GGUF (atomically: tmp file, then rename)."""
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    model_dir, out = Path(model_dir), Path(out)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{model_dir} is not a Hugging Face checkpoint directory (no config.json)")
    config = text_config(json.loads(config_path.read_text()))
    vocab = read_vocab(model_dir, config.vocab)
    return write_llama(out, config, vocab, text_tensors(model_dir, config), dtype, model_dir.name, progress)


def write_llama(
    out: Path,
    config: TextConfig,
    vocab: Vocab,
    tensors: Iterable[PlannedTensor | tuple[str, np.ndarray]],
    dtype: str = "f16",
    name: str = "model",
    progress: bool = False,
) -> Path:
    """A llama GGUF from hyper-parameters, a vocabulary and tensors in llama.cpp's layout (planned, or
    (GGUF name, array) pairs already in memory)."""
    import gguf

    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config.context)
    writer.add_embedding_length(config.hidden)
    writer.add_block_count(config.layers)
    writer.add_feed_forward_length(config.intermediate)
    writer.add_head_count(config.heads)
    writer.add_head_count_kv(config.kv_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_eps)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_vocab_size(config.vocab)
    _write_vocab(writer, vocab)
    planned = [t if isinstance(t, PlannedTensor) else _in_memory(*t) for t in tensors]
    for t in planned:  # every header first: shapes and types are known without loading anything
        kind = np.dtype(_gguf_dtype(t.shape, dtype))
        writer.add_tensor_info(t.name, t.shape, kind, int(np.prod(t.shape)) * kind.itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in progress_bar(planned, desc="gguf", unit="tensor", disable=not progress):
        array = t.load()
        if tuple(array.shape) != tuple(t.shape):
            raise ExportError(f"{t.name}: planned shape {t.shape}, loaded {array.shape}")
        converted = np.ascontiguousarray(array, dtype=_gguf_dtype(t.shape, dtype))
        if converted.dtype == np.float16 and not np.isfinite(converted).all():
            raise ExportError(f"{t.name} holds values beyond F16's range (±65504): export with --dtype f32")
        writer.write_tensor_data(converted)
        del array, converted
    writer.close()
    tmp.replace(out)
    log.info("wrote %s (%s, %s tokenizer, %d tokens)", out, dtype, vocab.family, len(vocab.tokens))
    return out


def _gguf_dtype(shape: tuple[int, ...], dtype: str):
    """Matrices take the requested type; norms and other vectors stay F32."""
    return np.float16 if len(shape) >= 2 and dtype == "f16" else np.float32


def _in_memory(name: str, array: np.ndarray) -> PlannedTensor:
    return PlannedTensor(name, tuple(array.shape), lambda: array)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.gguf",
        description="Write the text model of a merged LLaVA checkpoint as a llama GGUF (F16 or F32), tokenizer inside. "
        "python -m export.quantize builds the whole bundle; this is the step on its own.",
        epilog="example: python -m export.gguf --model runs/rt-merged --out runs/llm-f16.gguf --dtype f16",
    )
    parser.add_argument("--model", type=Path, required=True, help="merged HF LLaVA checkpoint directory")
    parser.add_argument("--out", type=Path, required=True, help="the .gguf file to write")
    parser.add_argument("--dtype", choices=DTYPES, default="f16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        write_gguf(args.model, args.out, args.dtype, progress=sys.stderr.isatty())
    except (ExportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
