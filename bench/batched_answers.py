"""Torch answers one at a time against ``answer_many``'s batches, side by side on the same requests: the speed-up and
whether every answer is the same.

    python bench/batched_answers.py --model runs/n-build/merged --root runs/n-build/test-clutter --requests 64

The requests are the first of the set's evaluation items (every referring instruction of its images), prompted as
``training.evaluate`` prompts them. One pass of each, one after the other, in this process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def measure(model_dir: Path, root: Path, requests: int) -> dict:
    from training.datasets import open_dataset
    from training.datasets.augment import center_crop
    from training.evaluate import ANSWER_BATCH, answer, answer_many, evaluation_items
    from training.model import load_llava
    from training.view import ModelView

    model, processor = load_llava(model_dir)
    model.eval()
    view = ModelView.load(model_dir)
    dataset = open_dataset(root)
    asked = []
    for image_id, referral in evaluation_items(dataset, list(dataset.ids))[:requests]:
        sample = center_crop(dataset.load(image_id, with_depth=False), view.crop, (view.size, view.size))
        instruction = referral.text if referral is not None else f"pick up the {sample.category}"
        asked.append((sample.image, view.prompt(instruction)))
    start = time.perf_counter()
    alone = [answer(model, processor, image, "", prompt=prompt) for image, prompt in asked]
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = answer_many(model, processor, [image for image, _ in asked], [prompt for _, prompt in asked])
    batched_s = time.perf_counter() - start
    return {
        "requests": len(asked),
        "batch": ANSWER_BATCH,
        "one_at_a_time_s": round(single_s, 2),
        "batched_s": round(batched_s, 2),
        "speedup": round(single_s / batched_s, 2),
        "same_answers": sum(a == b for a, b in zip(alone, batched)),
        "mean_answer_tokens": sum(n for _, n in alone) / len(alone),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/batched_answers.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a torch checkpoint with view.json")
    parser.add_argument("--root", type=Path, required=True, help="a dataset (training.synth) to take requests from")
    parser.add_argument("--requests", type=int, default=64)
    args = parser.parse_args(argv)
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    try:
        result = measure(args.model, args.root, args.requests)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    print(
        f"{result['requests']} requests: one at a time {result['one_at_a_time_s']} s, in batches of {result['batch']} "
        f"{result['batched_s']} s ({result['speedup']}x); the same answer for {result['same_answers']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
