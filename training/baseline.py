"""A learning-free grasp baseline: segment the object, grasp across its principal axis.

The object is every pixel whose colour is far from the image border's median
colour; the grasp is centred on its centroid with the closing axis along the
minor principal axis (across the object). It needs no training and gives the
metric and the demo something honest to score before a model exists.

    python -m training.baseline --root runs/toy --out runs/toy-baseline.jsonl --vis runs/toy-vis
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from appliance.grasp import GraspPose
from training.progress import progress_bar

from .datasets import open_dataset
from .visualize import GREEN, RED, draw_grasps

COLOUR_THRESHOLD = 40.0  # RGB distance from the background colour
BORDER = 4  # pixels of border used to estimate the background


def predict(image: np.ndarray) -> GraspPose:
    """Grasp pose across the principal axis of the image's foreground object."""
    h, w = image.shape[:2]
    pixels = image.astype(np.float32)
    border = np.concatenate(
        [
            pixels[:BORDER].reshape(-1, 3),
            pixels[-BORDER:].reshape(-1, 3),
            pixels[:, :BORDER].reshape(-1, 3),
            pixels[:, -BORDER:].reshape(-1, 3),
        ]
    )
    distance = np.linalg.norm(pixels - np.median(border, axis=0), axis=2)
    ys, xs = np.nonzero(distance > COLOUR_THRESHOLD)
    if len(xs) < 3:
        return GraspPose(0.5, 0.5, 0.0)  # nothing found: the centre, as a guess
    cx, cy = xs.mean(), ys.mean()
    cov = np.cov(np.stack([xs - cx, ys - cy]))
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    minor = eigenvectors[:, 0]  # smallest spread: across the object
    theta = math.atan2(-minor[1], minor[0])
    return GraspPose(float((cx + 0.5) / w), float((cy + 0.5) / h), theta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.baseline",
        description="Predict one grasp per image with the learning-free principal-axis baseline; "
        "writes the JSONL that python -m training.metric scores.",
        epilog="example: python -m training.baseline --root runs/toy --out runs/baseline.jsonl --vis runs/vis",
    )
    parser.add_argument("--root", type=Path, required=True, help="dataset root")
    parser.add_argument("--out", type=Path, required=True, help="predictions JSONL to write")
    parser.add_argument("--vis", type=Path, help="write PNGs: prediction red, ground truth green")
    parser.add_argument("--limit", type=int, help="only the first N images")
    args = parser.parse_args(argv)
    try:
        ds = open_dataset(args.root)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.vis:
        args.vis.mkdir(parents=True, exist_ok=True)
    ids = ds.ids[: args.limit] if args.limit else ds.ids
    with args.out.open("w") as out:
        for image_id in progress_bar(ids, desc="baseline", unit="img"):
            sample = ds.load(image_id, with_depth=False)
            pose = predict(sample.image)
            out.write(json.dumps({"image": image_id, "x": pose.x, "y": pose.y, "theta": pose.theta}) + "\n")
            if args.vis:
                truth = sample.positives[0] if sample.positives else None
                size = (truth.length, truth.width) if truth else (40.0, 15.0)
                canvas = draw_grasps(sample.image, sample.positives, GREEN)
                draw_grasps(canvas, [pose.to_rectangle(sample.image_size, *size)], RED).save(
                    args.vis / f"{image_id}.png"
                )
    print(f"wrote {len(ids)} predictions to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
