"""LLaVA models: load any Hugging Face ``LlavaForConditionalGeneration`` directory, or build ``tiny``.

A real checkpoint (e.g. llava-1.5-7b-hf) is a directory the user supplies.
``tiny`` is a few-million-parameter LLaVA built from scratch (CLIP-style ViT,
Llama decoder, our own tokenizer), saved as a normal HF checkpoint directory
that every later stage loads exactly like a real one.

    python -m training.model --out runs/tiny-base --tokenizer spm
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from .reasoning import load_templates
from .reasoning.corpus import corpus
from .tokenizer import IMAGE, KINDS, train_tokenizer
from .view import ModelView

# LLaVA-1.5's conversation format; the bundle records it, the runtime fills it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: {{ message['content'] }} "
    "{% else %}ASSISTANT: {{ message['content'] }}</s>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
PROMPT_TEMPLATE = ModelView().prompt_template
"""The image-first single-turn prompt, ``USER: <image>\\n{instruction} ASSISTANT:`` (a model's own is its
``view.prompt_template``)."""


DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}
"""Weight dtypes a checkpoint is written in, with their bytes per parameter."""


@dataclass(frozen=True)
class LlavaShape:
    """The sizes of a LLaVA: CLIP vision tower, two-layer GELU projector, Llama decoder, tokenizer.

    The defaults are ``tiny``: 224 px images in 28 px patches → 64 image tokens, a few million parameters.
    ``PRESETS`` holds the others; ``with_layers`` cuts the decoder and keeps every width."""

    image_size: int = 224
    patch_size: int = 28
    vision_hidden: int = 192
    vision_intermediate: int = 768
    vision_layers: int = 4
    vision_heads: int = 4
    projection_dim: int = 192
    feature_layer: int = -1
    """The vision tower's hidden state the projector reads (LLaVA-1.5: −2, the penultimate layer)."""
    text_hidden: int = 256
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 4
    text_intermediate: int = 704
    rms_eps: float = 1e-6
    max_positions: int = 1024
    vocab_size: int = 1024
    """Tokens the tokenizer is trained to (on our own corpus: nothing is downloaded)."""
    model_vocab: int | None = None
    """Rows of the embedding and output matrices (None: the tokenizer's size); a real checkpoint's size pads
    the tokenizer to it, as llava-1.5-7b-hf pads LLaMA's 32000 tokens to 32064."""
    dtype: str = "float32"
    """What the weights are saved as (llava-1.5-7b-hf ships float16; we write bfloat16, the training dtype)."""
    tokenizer: str = "spm"

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if self.tokenizer not in KINDS:
            raise ValueError(f"tokenizer must be one of {KINDS}, got {self.tokenizer!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.text_layers < 1:
            raise ValueError(f"the decoder needs at least one layer, got {self.text_layers}")
        if self.model_vocab is not None and self.model_vocab < self.vocab_size:
            raise ValueError(f"model_vocab {self.model_vocab} is smaller than the tokenizer's {self.vocab_size}")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def with_layers(self, layers: int | None) -> LlavaShape:
        """The same widths with ``layers`` decoder layers (None: unchanged)."""
        return self if layers is None else replace(self, text_layers=layers)


TinyConfig = LlavaShape
"""The tiny model's shape (the defaults); the name the tests and the pipeline grew up with."""

PRESETS = {
    "tiny": LlavaShape(),
    # llava-hf/llava-1.5-7b-hf's config.json: CLIP ViT-L/14 at 336 px (577 positions, the penultimate layer, CLS
    # dropped → 576 image embeddings), a GELU projector to 4096, Vicuna-7B (LLaMA-2 shape), 32064 tokens.
    "llava-1.5-7b": LlavaShape(
        image_size=336,
        patch_size=14,
        vision_hidden=1024,
        vision_intermediate=4096,
        vision_layers=24,
        vision_heads=16,
        projection_dim=768,
        feature_layer=-2,
        text_hidden=4096,
        text_layers=32,
        text_heads=32,
        text_kv_heads=32,
        text_intermediate=11008,
        rms_eps=1e-5,
        max_positions=4096,
        vocab_size=1024,
        model_vocab=32064,
        dtype="bfloat16",
    ),
}


def llava_config(shape: LlavaShape, tokenizer):
    """The ``LlavaConfig`` of a shape, with the token ids of ``tokenizer``."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_intermediate,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        projection_dim=shape.projection_dim,
    )
    text = LlamaConfig(
        vocab_size=shape.model_vocab or len(tokenizer),
        hidden_size=shape.text_hidden,
        intermediate_size=shape.text_intermediate,
        num_hidden_layers=shape.text_layers,
        num_attention_heads=shape.text_heads,
        num_key_value_heads=shape.text_kv_heads,
        max_position_embeddings=shape.max_positions,
        rms_norm_eps=shape.rms_eps,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=shape.image_tokens,
        vision_feature_layer=shape.feature_layer,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )


def build_model(config: LlavaShape = LlavaShape(), seed: int = 0, lines: Iterable[str] | None = None):
    """A randomly initialised LLaVA of this shape and its processor (tokenizer trained on ``lines``, by default our
    corpus).

    Weights are made directly in the shape's dtype: a 7B model in bfloat16 takes 14 GB, in float32 28."""
    import torch
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    try:  # the PIL image processor needs no torchvision, which the robot side never installs
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:  # older transformers
        from transformers import CLIPImageProcessor

    lines = corpus(load_templates(), seed=seed) if lines is None else lines
    tokenizer = train_tokenizer(lines, config.tokenizer, config.vocab_size)
    llava = llava_config(config, tokenizer)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, config.dtype))
    try:
        model = LlavaForConditionalGeneration(llava)
    finally:
        torch.set_default_dtype(default)
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


build_tiny = build_model
"""``build_model`` by the name the tests grew up with."""


def load_llava(path: Path, dtype="auto"):
    """Load a LLaVA checkpoint directory (ours or a real one) with its processor.

    ``dtype`` "auto" keeps the dtype the weights were saved in (a 7B bfloat16 checkpoint takes 14 GB, not 28);
    a torch dtype converts."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype)
    if model.config.model_type != "llava":
        raise ValueError(f"{path} holds a {model.config.model_type!r} model, not LLaVA")
    return model, untruncated(AutoProcessor.from_pretrained(path))


TRUNCATION_KEYS = ("max_length", "truncation_strategy")


def untruncated(processor):
    """The processor with no length limit left over from an earlier tokenizer call.

    A call with ``truncation=True, max_length=N`` (our language stage's, before session 15) is saved with the
    tokenizer, and transformers' processors apply the saved ``max_length`` to every later prompt: checkpoints built
    from such a stage cut every prompt to N tokens, the image's included, so a long instruction lost its end
    ("… ASSISTAN") and a follow-up most of its conversation."""
    tokenizer = processor.tokenizer
    for key in TRUNCATION_KEYS:
        tokenizer.init_kwargs.pop(key, None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is not None:  # saved in tokenizer.json: plain loaders read it
        backend.no_truncation()
    return processor


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_estimate(shape: LlavaShape) -> int:
    """Parameters of a shape, counted from its sizes (to check memory and disk before building)."""
    v, t = shape.vision_hidden, shape.text_hidden
    patches = shape.image_tokens + 1
    vision = (
        3 * shape.patch_size**2 * v
        + patches * v
        + shape.vision_layers * (4 * v * v + 2 * v * shape.vision_intermediate)
    )
    projector = v * t + t * t
    vocab = shape.model_vocab or shape.vocab_size
    head_dim = t // shape.text_heads
    attention = 2 * t * t + 2 * t * shape.text_kv_heads * head_dim
    text = 2 * vocab * t + shape.text_layers * (attention + 3 * t * shape.text_intermediate)
    return vision + projector + text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.model",
        description="Build a LLaVA from scratch (random weights, tokenizer trained on our corpus) and save it as a "
        "Hugging Face checkpoint directory. --preset tiny is the few-million-parameter model the demo is trained "
        "from; --preset llava-1.5-7b has llava-1.5-7b-hf's exact shapes (CLIP ViT-L/14 at 336 px, 576 image "
        "embeddings from the penultimate layer, Llama-2-7B decoder, 32064-token vocabulary) in bfloat16 shards, "
        "for checking that every stage works at that size.",
        epilog="examples: python -m training.model --out runs/tiny-base\n"
        "          python -m training.model --preset llava-1.5-7b --layers 4 --out runs/l7b-cut4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--layers", type=int, help="keep every width, cut the decoder to this many layers")
    parser.add_argument(
        "--tokenizer", choices=KINDS, default="spm", help="spm (SentencePiece-style, like LLaVA-1.5) or bpe"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        config = replace(PRESETS[args.preset], tokenizer=args.tokenizer).with_layers(args.layers)
        need = parameter_estimate(config) * DTYPES[config.dtype]
        args.out.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(args.out).free
        if need > free:
            raise OSError(
                f"{args.preset} needs about {need / 1e9:.1f} GB on disk, {args.out} has {free / 1e9:.1f} GB free"
            )
        model, processor = build_model(config, args.seed)
        model.save_pretrained(args.out, max_shard_size="4GB")
        processor.save_pretrained(args.out)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.preset} LLaVA ({config.text_layers} decoder layers) with {count_parameters(model) / 1e6:.1f} M "
        f"parameters in {config.dtype}, {config.image_tokens} image tokens, {len(processor.tokenizer)} tokens "
        f"({args.tokenizer}) in a {model.config.text_config.vocab_size}-row vocabulary, saved to {args.out}"
    )
    print(asdict(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
