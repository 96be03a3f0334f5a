"""LLaVA models: load any Hugging Face ``LlavaForConditionalGeneration`` directory, or build ``tiny``.

A real checkpoint (e.g. llava-1.5-7b-hf) is a directory the user supplies.
``tiny`` is a few-million-parameter LLaVA built from scratch (CLIP-style ViT,
Llama decoder, our own tokenizer), saved as a normal HF checkpoint directory
that every later stage loads exactly like a real one.

    python -m training.model --out runs/tiny-base --tokenizer spm
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .reasoning import load_templates
from .reasoning.corpus import corpus
from .tokenizer import IMAGE, KINDS, train_tokenizer

# LLaVA-1.5's conversation format; the bundle records it, the runtime fills it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {{ message['content'] }} "
    "{% else %}ASSISTANT: {{ message['content'] }}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
PROMPT_TEMPLATE = "USER: <image>\n{instruction} ASSISTANT:"
"""The single-turn prompt, as a plain format string (what the runtime fills)."""


@dataclass(frozen=True)
class TinyConfig:
    """Sizes of the tiny LLaVA: 224 px images in 28 px patches → 64 image tokens."""

    image_size: int = 224
    patch_size: int = 28
    vision_hidden: int = 192
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 704
    vocab_size: int = 1024
    max_positions: int = 1024
    tokenizer: str = "spm"

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if self.tokenizer not in KINDS:
            raise ValueError(f"tokenizer must be one of {KINDS}, got {self.tokenizer!r}")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def build_tiny(config: TinyConfig = TinyConfig(), seed: int = 0):
    """A randomly initialised tiny LLaVA and its processor (tokenizer trained on our corpus)."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    try:  # the PIL image processor needs no torchvision, which the robot side never installs
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor

    tokenizer = train_tokenizer(corpus(load_templates(), seed=seed), config.tokenizer, config.vocab_size)
    vision = CLIPVisionConfig(
        hidden_size=config.vision_hidden,
        intermediate_size=4 * config.vision_hidden,
        num_hidden_layers=config.vision_layers,
        num_attention_heads=config.vision_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        projection_dim=config.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.text_hidden,
        intermediate_size=config.text_intermediate,
        num_hidden_layers=config.text_layers,
        num_attention_heads=config.text_heads,
        num_key_value_heads=config.text_heads,
        max_position_embeddings=config.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    llava = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=config.image_tokens,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(llava)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": config.image_size}, crop_size={"height": config.image_size, "width": config.image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def load_llava(path: Path, dtype=None):
    """Load a LLaVA checkpoint directory (ours or a real one) with its processor."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
    model = (
        LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype)
        if dtype
        else LlavaForConditionalGeneration.from_pretrained(path)
    )
    if model.config.model_type != "llava":
        raise ValueError(f"{path} holds a {model.config.model_type!r} model, not LLaVA")
    return model, AutoProcessor.from_pretrained(path)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.model",
        description="Build the tiny LLaVA from scratch (random weights, tokenizer trained on our corpus) "
        "and save it as a Hugging Face checkpoint directory.",
        epilog="example: python -m training.model --out runs/tiny-base --tokenizer spm",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--tokenizer", choices=KINDS, default="spm", help="spm (SentencePiece-style, like LLaVA-1.5) or bpe"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = TinyConfig(tokenizer=args.tokenizer)
    model, processor = build_tiny(config, args.seed)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    print(
        f"tiny LLaVA with {count_parameters(model) / 1e6:.1f} M parameters, {config.image_tokens} image tokens, "
        f"{len(processor.tokenizer)} tokens ({args.tokenizer}) saved to {args.out}"
    )
    print(asdict(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
