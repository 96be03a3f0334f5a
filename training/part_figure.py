"""Draw the part-aware metric on one synthetic scene: regions, forbidden parts, one right and one wrong grasp.

Allowed grasp regions of the target are green (segments, or dots with their closing direction), forbidden
parts (blade, lens, tip) red, other objects outlined in blue. The right grasp is a labelled grasp of the
target that the part metric accepts; the wrong one is the nearest shift of it along the jaw that the
rectangle metric still accepts and the part metric rejects (the reason is printed beside it). Each grasp is
drawn with its two finger pads.

    python -m training.part_figure --root data/clutter --instruction pcd0007-1 --out docs/part-metric.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from appliance.grasp import GraspPose, score_pose
from appliance.sim.objects import FORBIDDEN_PARTS

from .datasets import open_dataset
from .part_metric import PAD_DEPTH, PAD_LENGTH, score_part

GREEN, RED, BLUE, WHITE = (40, 200, 60), (230, 40, 40), (60, 110, 240), (255, 255, 255)
SHIFTS_PX = range(4, 60, 2)
ZOOM, ZOOM_MARGIN = 3, 30


def find_grasps(dataset, instruction):
    """(right pose, wrong pose, why the wrong one is wrong), or None when the target offers no such pair.
    Among wrong grasps, one with a pad on a forbidden part is shown first, then one touching another object."""
    labels = dataset.instruction_labels(instruction)
    scene = dataset.scene(instruction.image)
    size = labels.image_size
    found = []
    for rect in labels.positives:
        right = GraspPose.from_rectangle(rect, size)
        if not score_part(right, scene, instruction.target, size).correct:
            continue
        jaw = np.array([math.sin(right.theta), math.cos(right.theta)])
        for shift in SHIFTS_PX:
            for sign in (1, -1):
                u, v = np.array(right.pixel_center(size)) + sign * shift * jaw
                wrong = GraspPose(u / size[0], v / size[1], right.theta)
                part = score_part(wrong, scene, instruction.target, size)
                if not part.correct and score_pose(wrong, labels.positives, size).correct:
                    found.append((right, wrong, part.reason))
                    break
            else:
                continue
            break
    return min(found, key=lambda f: _preference(f[2]), default=None)


def _preference(reason: str) -> int:
    return 0 if any(p in reason for p in FORBIDDEN_PARTS) else 1 if "another object" in reason else 2


def draw_figure(dataset, instruction, out: Path) -> str:
    """Write the figure; returns the wrong grasp's reason."""
    found = find_grasps(dataset, instruction)
    if found is None:
        raise ValueError(f"instruction {instruction.id}: no labelled grasp pair fits (try another)")
    right, wrong, reason = found
    sample = dataset.load(instruction.image, with_depth=False)
    scene = dataset.scene(instruction.image)
    size = sample.image_size
    canvas = Image.fromarray(sample.image).convert("RGB")
    overlay = np.asarray(canvas).copy()
    for i, (k, part) in enumerate(scene.segments):
        pixels = scene.mask == i + 1
        if k == instruction.target and part in FORBIDDEN_PARTS:
            overlay[pixels] = (0.4 * overlay[pixels] + 0.6 * np.array(RED)).astype(np.uint8)
        elif k != instruction.target:
            edge = pixels & ~np.roll(pixels, 1, 0) | pixels & ~np.roll(pixels, 1, 1)
            overlay[edge] = BLUE
    canvas = Image.fromarray(overlay)
    draw = ImageDraw.Draw(canvas)
    for region in scene.objects[instruction.target]["regions"]:
        if not region["allowed"]:
            continue
        (u0, v0), (u1, v1) = region["start"], region["end"]
        draw.line([(u0, v0), (u1, v1)], fill=GREEN, width=3)
        draw.ellipse([u0 - 2, v0 - 2, u0 + 2, v0 + 2], fill=GREEN)
    labels = dataset.instruction_labels(instruction)
    opening = labels.positives[0].length
    for pose, colour in ((right, GREEN), (wrong, RED)):
        _draw_grasp(draw, pose, size, opening, scene.objects[instruction.target]["regions"][0]["mpp"], colour)
    rows, cols = np.nonzero(scene.object_mask(instruction.target))
    margin = ZOOM_MARGIN
    box = (max(0, cols.min() - margin), max(0, rows.min() - margin))
    box += (min(size[0], cols.max() + margin), min(size[1], rows.max() + margin))
    zoomed = canvas.crop(box).resize(((box[2] - box[0]) * ZOOM, (box[3] - box[1]) * ZOOM), Image.Resampling.NEAREST)
    figure = Image.new("RGB", (size[0] + zoomed.width + 10, max(size[1], zoomed.height) + 50), (0, 0, 0))
    figure.paste(canvas, (0, 50))
    figure.paste(zoomed, (size[0] + 10, 50))
    ImageDraw.Draw(figure).rectangle([box[0], box[1] + 50, box[2], box[3] + 50], outline=WHITE)
    text = ImageDraw.Draw(figure)
    text.text((6, 4), f'"{instruction.text}"  (target: {labels.category}; right: zoomed x{ZOOM})', fill=WHITE)
    text.text(
        (6, 18),
        "green: allowed regions of the target and a right grasp (line: closing axis, boxes: finger pads)",
        fill=WHITE,
    )
    text.text((6, 32), f"red: forbidden parts and a wrong grasp the rectangle metric accepts ({reason})", fill=WHITE)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    return reason


def _draw_grasp(draw, pose: GraspPose, size, opening: float, mpp: float, colour) -> None:
    """The closing line and the two finger pads (2 cm across × 1 cm along the closing axis)."""
    c = np.array(pose.pixel_center(size))
    closing = np.array([math.cos(pose.theta), -math.sin(pose.theta)])
    jaw = np.array([math.sin(pose.theta), math.cos(pose.theta)])
    draw.line([tuple(c - closing * opening / 2), tuple(c + closing * opening / 2)], fill=colour, width=2)
    along, across = PAD_DEPTH / mpp / 2, PAD_LENGTH / mpp / 2
    for side in (-1, 1):
        p = c + side * closing * opening / 2
        corners = [p + a * closing * along + b * jaw * across for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        draw.polygon([tuple(q) for q in corners], outline=colour, width=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.part_figure",
        description="Draw one synthetic scene with the part-aware metric's regions, forbidden parts and one "
        "right and one wrong grasp of an instruction's target.",
        epilog="example: python -m training.part_figure --root data/clutter --instruction pcd0007-1 --out docs/part-metric.png",
    )
    parser.add_argument("--root", type=Path, required=True, help="a synthetic root with instructions.jsonl")
    parser.add_argument("--instruction", required=True, help="an instruction id of the root (not 'absent')")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        dataset = open_dataset(args.root)
        by_id = {i.id: i for i in dataset.instructions}
        if args.instruction not in by_id:
            raise ValueError(f"no instruction {args.instruction!r} in {args.root}/instructions.jsonl")
        instruction = by_id[args.instruction]
        if instruction.target is None:
            raise ValueError(f"instruction {instruction.id} names an absent object: nothing to grasp")
        reason = draw_figure(dataset, instruction, args.out)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (wrong grasp: {reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
