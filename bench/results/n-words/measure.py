"""The instruction-aware baselines on one root, per instruction kind: cnn (blind), cnn-words (the rule), cnn-told.

python bench/results/n-words/measure.py ROOT VISION_CHECKPOINT [--json OUT]
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from training.baseline import BaselineOptions, items_of, make_predictor, run_baseline
from training.datasets import open_dataset
from training.metric import grade


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--kinds", default="floor,cnn,cnn-words,cnn-told,oracle")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dataset = open_dataset(args.root)
    items = items_of(dataset)
    report = {}
    for who in args.kinds.split(","):
        predictor = make_predictor(who, dataset, BaselineOptions(checkpoint=args.checkpoint))
        rows = defaultdict(lambda: defaultdict(list))
        for image_id, instruction, pose in run_baseline(predictor, dataset, items, progress=True, desc=who):
            g = grade(dataset, image_id, pose, instruction)
            for kind in ("all", instruction.kind):
                rows[kind]["rectangle"].append(g.rectangle)
                rows[kind]["part"].append(g.part)
                if g.on_target is not None:
                    rows[kind]["target"].append(g.on_target)
        report[who] = {
            kind: {m: round(100 * sum(v) / len(v), 1) if v else None for m, v in metrics.items()}
            | {"n": len(metrics["rectangle"])}
            for kind, metrics in rows.items()
        }
        print(who, json.dumps(report[who]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
