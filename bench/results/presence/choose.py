"""Choosing the presence check's rule and threshold on validation scenes (not the test seeds).

    python bench/results/presence/choose.py --heads runs/n-vision/checkpoint-004000 \\
        --root runs/n-build/test-clutter --root runs/n-build/test-single

For every image, the vision stage's identity head on the workspace crop (as the bundle's graph computes it);
for every instruction that asks for a category by name (``CategoryNames.requested``, as the appliance reads it),
whether each rule would call that category absent. Rules: ``patches`` (the softmax summed over the patches, the
expected patch count: what the bundle exports), ``argmax`` (patches whose most likely class, the table included, it is) and ``max``
(the largest probability any patch gives it). Prints, per root and rule, the absent instructions refused and the
others refused by mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

THRESHOLDS = {
    "patches": (0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
    "argmax": (1, 2, 3),
    "max": (0.2, 0.3, 0.5, 0.7),
}


def measure(heads: Path, root: Path, crop: int, size: int) -> list[dict]:
    """Per instruction asking for a category: its kind and the category's score under each rule."""
    import torch

    from appliance.runtime.objects import CategoryNames
    from export.speech import categories
    from training.datasets import open_dataset
    from training.datasets.augment import center_crop
    from training.model import load_llava
    from training.stages import PATCH_IDENTITY, heads_outputs, identity_classes

    torch.set_num_threads(1)
    model, processor = load_llava(heads)
    outputs = heads_outputs(heads, model, processor)
    classes = identity_classes()
    names = CategoryNames(categories())
    dataset = open_dataset(root)
    records = [json.loads(line) for line in (root / "instructions.jsonl").read_text().splitlines() if line.strip()]
    scores: dict[str, dict] = {}
    rows = []
    for record in records:
        asked = names.requested(record["text"])
        if asked is None or asked[1] not in classes:
            continue
        image_id = record["image"]
        if image_id not in scores:
            sample = center_crop(dataset.load(image_id, with_depth=False), crop, (size, size))
            every = outputs(sample.image)[PATCH_IDENTITY][0].softmax(-1)  # the categories, then the table
            probs = every[:, :-1]
            scores[image_id] = {
                "patches": probs.sum(0),
                "argmax": torch.bincount(every.argmax(-1), minlength=len(classes) + 1),
                "max": probs.max(0).values,
            }
        k = classes.index(asked[1])
        rows.append({"kind": record["kind"], **{rule: float(v[k]) for rule, v in scores[image_id].items()}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", type=Path, required=True, help="the vision stage's checkpoint")
    parser.add_argument("--root", type=Path, action="append", required=True, help="a validation set (repeat)")
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    figures = {}
    for root in args.root:
        rows = measure(args.heads, root, args.crop, args.size)
        absent = [r for r in rows if r["kind"] == "absent"]
        present = [r for r in rows if r["kind"] != "absent"]
        print(f"{root}: {len(absent)} absent, {len(present)} present objects asked for by name")
        for rule, thresholds in THRESHOLDS.items():
            for t in thresholds:
                a = sum(r[rule] < t for r in absent) / max(1, len(absent))
                p = sum(r[rule] < t for r in present) / max(1, len(present))
                figures[f"{root.name}:{rule}>={t}"] = {"absent_refused": a, "present_refused": p}
                print(f"  {rule:8} >= {t:<5}  absent refused {100 * a:5.1f} %   present refused {100 * p:5.1f} %")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
