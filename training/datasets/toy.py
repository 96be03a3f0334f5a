"""A tiny drawn dataset in Cornell format: rulers, toy blocks and plates seen from above.

It exists so the readers, splits, metric and demo run on a fresh machine with
no data; the MuJoCo-rendered synthetic set replaces it for training.

    python -m training.datasets.toy --out runs/toy --images 40 --seed 0
"""

from __future__ import annotations

import argparse
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from appliance.grasp import GraspRectangle

from .files import ObjectInfo, write_cornell_rectangles, write_depth_tiff, write_object_map

IMAGE_SIZE = (320, 240)
TABLE_DEPTH = 0.70  # metres from the camera
SHAPES = ("ruler", "toy block", "plate")  # categories of the reasoning taxonomy
PART = {"ruler": "middle", "toy block": "sides", "plate": "rim"}


@dataclass(frozen=True)
class ToyObject:
    """One physical toy object: a shape of fixed size and colour."""

    object_id: str
    shape: str
    size: tuple[float, float]  # (long, short) pixels; disks use size[0] as diameter
    height: float  # metres above the table
    color: tuple[int, int, int]


def make_objects(n: int, rng: random.Random) -> list[ToyObject]:
    """n objects cycling through the shapes, each with its own size and colour."""
    objects = []
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)]
        long_side = rng.uniform(60, 110) if shape == "ruler" else rng.uniform(35, 55)
        short_side = rng.uniform(14, 24) if shape == "ruler" else long_side
        color = tuple(rng.randint(40, 220) for _ in range(3))
        objects.append(ToyObject(f"toy{i:02d}", shape, (long_side, short_side), rng.uniform(0.02, 0.06), color))
    return objects


def place(
    obj: ToyObject, rng: random.Random
) -> tuple[list[tuple[float, float]], list[GraspRectangle], list[GraspRectangle]]:
    """Outline polygon, positive and negative grasps of the object at a random pose."""
    w, h = IMAGE_SIZE
    cx, cy = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.3 * h, 0.7 * h)
    phi = rng.uniform(-math.pi, math.pi)
    long_side, short_side = obj.size
    if obj.shape == "plate":
        r = long_side / 2
        outline = [
            (cx + r * math.cos(a), cy - r * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 48, endpoint=False)
        ]
        pos = [
            GraspRectangle.from_center(cx, cy, phi + k * math.pi / 4, long_side * 1.3, long_side * 0.3)
            for k in range(4)
        ]
        return outline, pos, []
    body = GraspRectangle.from_center(cx, cy, phi, long_side, short_side)
    outline = [tuple(p) for p in body.points]
    across = phi + math.pi / 2
    span = long_side / 3 if obj.shape == "ruler" else 0.0
    pos = [
        GraspRectangle.from_center(
            cx + t * math.cos(phi), cy - t * math.sin(phi), across, short_side * 1.5, short_side * 0.5
        )
        for t in np.linspace(-span, span, 3)
    ]
    if obj.shape == "toy block":
        pos.append(GraspRectangle.from_center(cx, cy, phi, long_side * 1.5, long_side * 0.5))
    neg = [] if obj.shape == "toy block" else [GraspRectangle.from_center(cx, cy, phi, long_side * 0.8, short_side)]
    return outline, pos, neg


def render(obj: ToyObject, outline, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """RGB with a faintly noisy table, and metric depth (table plane, raised object)."""
    w, h = IMAGE_SIZE
    table = np.array([150, 140, 120]) + rng.uniform(-10, 10)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 4, (h, w, 3))
    rgb = Image.fromarray(np.clip(table + noise, 0, 255).astype(np.uint8))
    mask = Image.new("L", IMAGE_SIZE, 0)
    ImageDraw.Draw(rgb).polygon(outline, fill=obj.color)
    ImageDraw.Draw(mask).polygon(outline, fill=255)
    depth = np.full((h, w), TABLE_DEPTH, dtype=np.float32)
    depth[np.asarray(mask) > 0] -= obj.height
    return np.asarray(rgb), depth


@dataclass(frozen=True)
class ToyImage:
    """One generated image with its labels."""

    image_id: str
    obj: ToyObject
    rgb: np.ndarray
    depth: np.ndarray
    positives: list[GraspRectangle]
    negatives: list[GraspRectangle]


def generate(images: int, seed: int = 0, objects: int = 9):
    """Yield ``images`` toy images of ``objects`` objects, deterministically for a seed."""
    rng = random.Random(seed)
    library = make_objects(objects, rng)
    for n in range(images):
        obj = library[n % len(library)]
        outline, pos, neg = place(obj, rng)
        rgb, depth = render(obj, outline, rng)
        yield ToyImage(f"pcd{n:04d}", obj, rgb, depth, pos, neg)


def write_toy_dataset(out: Path, images: int, seed: int = 0, objects: int = 9) -> Path:
    """Write ``images`` Cornell-format images of ``objects`` toy objects under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for item in generate(images, seed, objects):
        Image.fromarray(item.rgb).save(out / f"{item.image_id}r.png")
        write_depth_tiff(out / f"{item.image_id}d.tiff", item.depth)
        write_cornell_rectangles(out / f"{item.image_id}cpos.txt", item.positives)
        write_cornell_rectangles(out / f"{item.image_id}cneg.txt", item.negatives)
        (out / f"{item.image_id}parts.txt").write_text(f"{PART[item.obj.shape]}\n" * len(item.positives))
        mapping[item.image_id] = ObjectInfo(
            item.obj.object_id, f"{item.obj.shape} {item.obj.object_id}", item.obj.shape
        )
    write_object_map(out / "objects.csv", mapping)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Write a tiny drawn grasp dataset in Cornell format (for demos and tests).",
        epilog="example: python -m training.datasets.toy --out runs/toy --images 40 --seed 0",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--images", type=int, default=40, help="number of images (default 40)")
    parser.add_argument("--objects", type=int, default=9, help="number of distinct objects (default 9)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.images < 1 or args.objects < 1:
        parser.error("--images and --objects must be at least 1")
    write_toy_dataset(args.out, args.images, args.seed, args.objects)
    print(f"wrote {args.images} images of {args.objects} objects to {args.out}")


if __name__ == "__main__":
    main()
