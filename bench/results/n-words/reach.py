"""Choose the target check's reach on a validation root, from the vision heads alone (no decoder needed).

For every instruction about an object on the table, the check is shown two poses, as if the reasoning had named the
target's category: the target's own middle labelled grasp (a right pose: moving it is a false move) and the middle
labelled grasp of each other object in the scene (a wrong pose: keeping it is a miss). Where it moves a pose, the
pose it moves to is judged too. Printed per reach.

    python bench/results/n-words/reach.py ROOT VISION_CHECKPOINT [--reach 0,1,2]
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from appliance.bundle import TargetCheckSpec
from appliance.grasp import GraspPose
from appliance.runtime.objects import CategoryNames
from appliance.runtime.target import TargetCheck
from training.baseline import items_of
from training.datasets import open_dataset
from training.datasets.augment import center_crop
from training.judging import judge
from training.model import load_llava
from training.progress import progress_bar
from training.reasoning import load_templates
from training.stages import PATCH_ANGLE, PATCH_CENTER, PATCH_IDENTITY, PATCH_OFFSET, heads_outputs, identity_classes
from training.view import ModelView


def to_view(pose: GraspPose, view: ModelView, image_size) -> GraspPose:
    """The inverse of ``training.judging.to_camera``."""
    w, h = image_size
    side = view.crop or min(w, h)
    return GraspPose((pose.x * w - (w / 2 - side / 2)) / side, (pose.y * h - (h / 2 - side / 2)) / side, pose.theta)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--reach", default="0,1,2")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dataset = open_dataset(args.root)
    view = ModelView(size=224, crop=320)
    model, processor = load_llava(args.checkpoint)
    outputs = heads_outputs(args.checkpoint, model, processor)
    grid = model.config.vision_config.image_size // model.config.vision_config.patch_size
    classes = identity_classes()
    names = CategoryNames(load_templates().vocabulary())
    reaches = [int(r) for r in args.reach.split(",")]
    checks = {r: TargetCheck(TargetCheckSpec(grid, r), classes, names) for r in reaches}
    tally = {r: {"right_kept": 0, "right_moved": 0, "wrong_kept": 0, "wrong_moved": 0, "moved_to": []} for r in reaches}
    cache = {}
    items = [(i, ins) for i, ins in items_of(dataset) if ins.target is not None]
    for image_id, instruction in progress_bar(items, desc="poses", unit="req"):
        if image_id not in cache:
            sample = dataset.load(image_id)
            out = outputs(center_crop(sample, view.crop, (view.size, view.size)).image)
            identity = out[PATCH_IDENTITY][0].softmax(-1).numpy()
            grasp = np.concatenate(
                [out[PATCH_CENTER][0][:, None].numpy(), out[PATCH_OFFSET][0].numpy(), out[PATCH_ANGLE][0].numpy()], -1
            )
            cache.clear()
            cache[image_id] = (sample.image_size, identity, grasp)
        size, identity, grasp = cache[image_id]
        scene = dataset.scene(image_id)
        category = scene.objects[instruction.target]["category"]
        reasoning = f"It is a {category}."

        def middle(target: int, instruction=instruction, size=size) -> GraspPose | None:
            labels = dataset.instruction_labels(dataclasses.replace(instruction, target=target))
            if not labels.positives:
                return None
            camera = GraspPose.from_rectangle(labels.positives[len(labels.positives) // 2], labels.image_size)
            return to_view(camera, view, size)

        right = middle(instruction.target)
        wrong = [p for j in range(len(scene.objects)) if j != instruction.target and (p := middle(j)) is not None]
        for r, check in checks.items():
            t = tally[r]
            if right is not None:
                moved = check.moved(right, reasoning, identity, grasp)
                t["right_moved" if moved else "right_kept"] += 1
                if moved:
                    t["moved_to"].append(judge(dataset, image_id, instruction, moved, view))
            for pose in wrong:
                moved = check.moved(pose, reasoning, identity, grasp)
                t["wrong_moved" if moved else "wrong_kept"] += 1
                if moved:
                    t["moved_to"].append(judge(dataset, image_id, instruction, moved, view))
    report = {}
    for r, t in tally.items():
        judged = t.pop("moved_to")
        right_n, wrong_n = t["right_kept"] + t["right_moved"], t["wrong_kept"] + t["wrong_moved"]
        report[r] = t | {
            "false_moves": round(100 * t["right_moved"] / right_n, 1) if right_n else None,
            "wrong_moved_pct": round(100 * t["wrong_moved"] / wrong_n, 1) if wrong_n else None,
            "moved_to_rectangle": round(100 * np.mean([j["correct"] for j in judged]), 1) if judged else None,
            "moved_to_part": round(100 * np.mean([j["part_correct"] for j in judged]), 1) if judged else None,
            "moved_to_target": round(100 * np.mean([j["on_target"] for j in judged]), 1) if judged else None,
        }
        print(f"reach {r}: {json.dumps(report[r])}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
