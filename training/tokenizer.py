"""Tokenizers trained on our own corpus, in the two families real checkpoints use.

- ``spm``: SentencePiece-style, as LLaMA-2 / LLaVA-1.5: BPE over words marked
  with "▁" (metaspace), byte fallback for anything unseen (``<0x00>``…``<0xFF>``).
- ``bpe``: byte-level BPE, as GPT-2 / LLaMA-3: every byte is a base symbol.

Both split numbers into single digits, so a pose's digits are tokens of their
own (a small model learns them far more easily than arbitrary number chunks),
and both prepend ``<s>``. Saved as a standard ``tokenizer.json`` that
``AutoTokenizer`` and our GGUF writer read.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from .view import IMAGE  # one definition of the prompt's image token

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD, IMAGE]
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]
KINDS = ("spm", "bpe")


def train_tokenizer(lines: Iterable[str], kind: str = "spm", vocab_size: int = 1024):
    """Train a tokenizer of the given family on ``lines``; returns a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}: expected one of {KINDS}")
    if kind == "spm":
        tok = Tokenizer(models.BPE(unk_token=UNK, byte_fallback=True, fuse_unk=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
                pre_tokenizers.Digits(individual_digits=True),
            ]
        )
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + BYTE_TOKENS, show_progress=False
        )
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE},
    )
