"""llama.cpp through its low-level API: tokens and image embeddings in, greedy tokens out.

The high-level ``llama_cpp.Llama`` cannot take embeddings, so this wraps the
C API directly: ``llama_batch_init(n, n_embd, 1)`` carries image embeddings,
token batches carry text, both at explicit positions in one sequence whose
KV cache can be cut back (``truncate``) to reuse a shared prefix.

Two ways llama.cpp takes the whole process down are guarded here: a batch
larger than ``n_batch`` aborts (every decode is split into chunks), and an
invalid grammar segfaults (every grammar passes ``appliance.runtime.gbnf`` first).
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .gbnf import parse_grammar

log = logging.getLogger(__name__)

KV_TYPES = {"f32": 0, "f16": 1}
"""ggml type ids of the KV cache precisions."""
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
PREPEND_FIRST_KEY = "rtgrasp.tokenizer.prepend_first"
"""Written by export.gguf for tokenizers that prepend a space at the start of a text only."""


class LlamaError(RuntimeError):
    """llama.cpp refused: a model that does not load, a decode that failed, a full context."""


class ContextFull(LlamaError):
    """A turn that does not fit the model's context (checked before anything is evaluated)."""

    code = "context_full"


class TooLong(ContextFull):
    """A first turn whose instruction alone leaves no room for the image and the answer."""

    code = "too_long"


def _lib():
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise LlamaError("llama-cpp-python is not installed: pip install 'rtgrasp[appliance]'") from exc
    return llama_cpp


_LOG_CALLBACK = None


def quiet_llama(lib) -> None:
    """Route llama.cpp's own log lines to Python logging at debug level (once per process)."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @lib.llama_log_callback
    def callback(level, text, user_data):
        log.debug("llama.cpp: %s", text.decode(errors="replace").rstrip())

    _LOG_CALLBACK = callback  # kept alive: llama.cpp holds the pointer
    lib.llama_log_set(callback, ctypes.c_void_p(0))


@dataclass(frozen=True)
class LlamaSettings:
    """Context size, batch size, threads and GPU offload for one model."""

    n_ctx: int = 1024
    n_batch: int = 256
    n_threads: int = 0
    """0: every core this process may use."""
    n_gpu_layers: int = 0
    """-1 or a large number offloads every layer (a CUDA build of llama-cpp-python)."""
    kv_cache: str = "f16"
    """KV cache precision: f16 (llama.cpp's default, half the memory) or f32 (exact parity checks)."""
    flash_attn: str = "auto"
    """auto, on or off; flash attention computes in f16, so parity checks turn it off."""

    @classmethod
    def exact(cls, **kw) -> LlamaSettings:
        """Settings for comparing with torch: f32 KV cache, no flash attention."""
        return cls(kv_cache="f32", flash_attn="off", **kw)

    def __post_init__(self) -> None:
        if self.flash_attn not in FLASH_ATTN:
            raise ValueError(f"flash_attn must be one of {sorted(FLASH_ATTN)}, got {self.flash_attn!r}")
        if self.kv_cache not in KV_TYPES:
            raise ValueError(f"kv_cache must be one of {sorted(KV_TYPES)}, got {self.kv_cache!r}")
        if self.n_ctx < 16 or self.n_batch < 1 or self.n_batch > self.n_ctx:
            raise ValueError(
                f"need 16 <= n_ctx and 1 <= n_batch <= n_ctx, got n_ctx={self.n_ctx}, n_batch={self.n_batch}"
            )


class TextModel:
    """One GGUF model with one context holding a single sequence."""

    def __init__(self, path: Path, settings: LlamaSettings = LlamaSettings()):
        lib = self._lib = _lib()
        quiet_llama(lib)
        lib.llama_backend_init()
        if not Path(path).is_file():
            raise LlamaError(f"{path} does not exist")
        params = lib.llama_model_default_params()
        params.n_gpu_layers = settings.n_gpu_layers
        self.model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise LlamaError(f"llama.cpp could not load {path}")
        ctx_params = lib.llama_context_default_params()
        ctx_params.n_ctx = settings.n_ctx
        ctx_params.n_batch = ctx_params.n_ubatch = settings.n_batch
        threads = settings.n_threads or len(os.sched_getaffinity(0))
        ctx_params.n_threads = ctx_params.n_threads_batch = threads
        ctx_params.no_perf = True
        ctx_params.type_k = ctx_params.type_v = KV_TYPES[settings.kv_cache]
        ctx_params.flash_attn_type = FLASH_ATTN[settings.flash_attn]
        self.ctx = lib.llama_init_from_model(self.model, ctx_params)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise LlamaError(f"llama.cpp could not create a context for {path}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_embd = lib.llama_model_n_embd(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx = lib.llama_n_ctx(self.ctx)
        self.n_batch = min(lib.llama_n_batch(self.ctx), lib.llama_n_ubatch(self.ctx))
        self.eos = lib.llama_vocab_eos(self.vocab)
        self.prepend_first = self.meta(PREPEND_FIRST_KEY) == "true"
        self.n_past = 0
        """How many positions of the sequence the KV cache holds."""
        self.n_evaluated = 0
        """Positions decoded since loading (a counter for timings)."""

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text (None when absent)."""
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    # -- text --------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = False, special: bool = True, start: bool = False) -> list[int]:
        """llama.cpp's tokens for ``text`` (special tokens such as ``<image>`` parsed when ``special``).

        ``start``: the text opens a conversation; a tokenizer that prepends "▁" only there (HF
        Metaspace ``first``) gets its space here, as the training tokenizer did."""
        if start and self.prepend_first and text and not text.startswith(" "):
            text = " " + text
        data = text.encode()
        room = len(data) + 8
        buf = (self._lib.llama_token * room)()
        n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, room, add_bos, special)
        if n < 0:  # byte fallback can take more tokens than bytes: ask again with the room it said it needs
            room = -n
            buf = (self._lib.llama_token * room)()
            n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, room, add_bos, special)
        if n < 0:
            raise LlamaError(f"tokenization needs {-n} tokens, more than {room}")
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing)."""
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def token_id(self, text: str) -> int:
        """The id of a single special token such as ``<image>``; ``LlamaError`` when it is not one token."""
        ids = self.tokenize(text, add_bos=False, special=True)
        if len(ids) != 1:
            raise LlamaError(f"{text!r} is not a single token of this vocabulary ({ids})")
        return ids[0]

    # -- decoding ----------------------------------------------------------------------
    def truncate(self, n_past: int) -> None:
        """Forget every position from ``n_past`` on (keep a shared prefix, drop the rest)."""
        if n_past < self.n_past:
            mem = self._lib.llama_get_memory(self.ctx)
            self._lib.llama_memory_seq_rm(mem, 0, n_past, -1)
            self.n_past = n_past

    def eval_tokens(self, tokens: list[int], all_logits: bool = False) -> None:
        """Append tokens to the sequence, in chunks of at most ``n_batch``; logits of the last one kept
        (of every one with ``all_logits``, when they fit one chunk: for checking a speculative draft)."""
        if all_logits and len(tokens) > self.n_batch:
            raise LlamaError(f"all_logits needs the tokens in one batch (at most {self.n_batch})")
        self._eval(
            len(tokens), lambda batch, i, k: batch.token.__setitem__(i, tokens[k]), embd=0, all_logits=all_logits
        )

    def eval_embeddings(self, embeddings: np.ndarray) -> None:
        """Append embedding vectors (n, n_embd) — the image — in chunks of at most ``n_batch``."""
        array = np.ascontiguousarray(embeddings, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.n_embd:
            raise LlamaError(f"embeddings must be (n, {self.n_embd}), got {array.shape}")

        def put(batch, i, k):
            ctypes.memmove(
                ctypes.byref(batch.embd.contents, 4 * i * self.n_embd), array[k].ctypes.data, 4 * self.n_embd
            )

        self._eval(len(array), put, embd=self.n_embd)

    def _eval(self, n: int, put, embd: int, all_logits: bool = False) -> None:
        lib = self._lib
        if self.n_past + n > self.n_ctx:
            raise ContextFull(f"context full: {self.n_past} + {n} positions > n_ctx {self.n_ctx}")
        batch = lib.llama_batch_init(self.n_batch, embd, 1)
        try:
            for start in range(0, n, self.n_batch):
                count = min(self.n_batch, n - start)
                for i in range(count):
                    put(batch, i, start + i)
                    batch.pos[i] = self.n_past + i
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = 0
                    batch.logits[i] = all_logits or start + i == n - 1
                batch.n_tokens = count
                status = lib.llama_decode(self.ctx, batch)
                if status != 0:
                    raise LlamaError(f"llama_decode failed with status {status}")
                self.n_past += count
                self.n_evaluated += count
        finally:
            lib.llama_batch_free(batch)

    def logits(self, i: int = -1) -> np.ndarray:
        """Logits after position ``i`` of the last batch (default: its last), a copy."""
        pointer = self._lib.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def grammar(self, source: str) -> Grammar:
        """A grammar constraint for this vocabulary; the source is validated before llama.cpp parses it."""
        return Grammar(self, source)

    def close(self) -> None:
        """Free the context and the model."""
        if getattr(self, "ctx", None):
            self._lib.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            self._lib.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        self.close()


class Grammar:
    """A llama.cpp grammar sampler used as a mask: which tokens may come next, then accept one."""

    def __init__(self, model: TextModel, source: str):
        parse_grammar(source)  # raises GrammarError: llama.cpp must never see a bad grammar
        self._lib = model._lib
        self._sampler = self._lib.llama_sampler_init_grammar(model.vocab, source.encode(), b"root")
        if not self._sampler:
            raise LlamaError("llama.cpp rejected the grammar")

    def allowed(self, token: int, logit: float) -> bool:
        """Whether ``token`` may come next (checked alone: cheap, the common case)."""
        data = (self._lib.llama_token_data * 1)(self._lib.llama_token_data(token, logit, 0.0))
        array = self._lib.llama_token_data_array(data, 1, -1, False)
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return np.isfinite(data[0].logit)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """The logits with every token the grammar forbids set to −inf."""
        n = len(logits)
        data = (self._lib.llama_token_data * n)()
        view = np.ctypeslib.as_array(data).view(np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)]))
        view["id"] = np.arange(n)
        view["logit"] = logits
        array = self._lib.llama_token_data_array(data, n, -1, False)
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(array))
        return view["logit"].copy()

    def accept(self, token: int) -> None:
        self._lib.llama_sampler_accept(self._sampler, token)

    def __del__(self):
        if getattr(self, "_sampler", None):
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None


def greedy(logits: np.ndarray, grammar: Grammar | None = None) -> int:
    """The most likely token the grammar allows (the grammar is asked about the argmax first)."""
    token = int(np.argmax(logits))
    if grammar is None or grammar.allowed(token, float(logits[token])):
        return token
    masked = grammar.mask(logits)
    if not np.isfinite(masked).any():
        raise LlamaError("the grammar allows no next token")
    return int(np.argmax(masked))
