"""Merge a LoRA checkpoint into its base: a plain Hugging Face LLaVA checkpoint.

python -m training.merge --adapter runs/rt-lora/checkpoint-000500 --out runs/rt-merged
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .view import VIEW_FILE


def merge(adapter: Path, out: Path, base: Path | None = None) -> Path:
    """Load base + adapter, fold the LoRA weights in, save model, processor and view."""
    from peft import PeftModel

    from .model import load_llava, untruncated

    adapter = Path(adapter)
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{adapter} has no adapter_config.json: not a LoRA checkpoint (a pretrain checkpoint is already whole)"
        )
    base = Path(base or json.loads(config_file.read_text())["base_model_name_or_path"])
    model, _ = load_llava(base)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    from transformers import AutoProcessor

    untruncated(AutoProcessor.from_pretrained(adapter)).save_pretrained(out)
    if (adapter / VIEW_FILE).is_file():
        shutil.copy(adapter / VIEW_FILE, out / VIEW_FILE)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.merge",
        description="Merge a LoRA checkpoint from training.train into its base model (a plain HF LLaVA checkpoint).",
        epilog="example: python -m training.merge --adapter runs/rt-lora/checkpoint-000500 --out runs/rt-merged",
    )
    parser.add_argument("--adapter", type=Path, required=True, help="a LoRA checkpoint directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", type=Path, help="base checkpoint (default: the one the adapter records)")
    args = parser.parse_args(argv)
    try:
        merge(args.adapter, args.out, args.base)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"merged {args.adapter} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
