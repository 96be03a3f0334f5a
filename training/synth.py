"""Write a synthetic grasp dataset in Cornell format, rendered from the simulated cell.

Each image shows one object of the simulated library (19 household categories,
``--instances`` objects each) resting at a random pose on the table, seen by
the cell's top-down camera. Positive rectangles come from the object's allowed
grasp regions, negatives from forbidden parts and wrong angles; the part of
each positive is written to ``pcdNNNNparts.txt`` and the object of each image
to ``objects.csv``. Deterministic for a seed, whatever the number of workers.

    python -m training.synth --out data/synth --images 1000 --seed 0
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np
from PIL import Image

from appliance.sim.objects import CATEGORIES, ObjectModel, make_object
from appliance.sim.scene import (
    CameraRenderer,
    CellCamera,
    TableConfig,
    body_pose,
    object_grasps,
    place,
    standalone_xml,
)
from training.progress import progress_bar

from .datasets.files import ObjectInfo, write_cornell_rectangles, write_depth_tiff, write_object_map

SETTLE_STEPS = 400  # 0.8 s of simulated time at 2 ms
MAX_PLACEMENTS = 10
MARGIN_PX = 8  # positives must lie this far inside the image


@dataclass(frozen=True)
class SynthConfig:
    """What the writer draws from."""

    seed: int = 0
    instances: int = 8
    scene_seed: int | None = None
    """Seed of the placements (default: ``seed``). The same ``seed`` with another ``scene_seed`` shows the
    same objects in poses never seen (an image-wise test set); another ``seed``, objects never seen."""
    categories: tuple[str, ...] = CATEGORIES
    camera: CellCamera = CellCamera()
    table: TableConfig = TableConfig()


def object_library(config: SynthConfig) -> list[ObjectModel]:
    """The fixed set of object instances (the same for every image of a seed)."""
    rng = random.Random(f"{config.seed}:library")
    return [
        make_object(category, rng, f"{category.replace(' ', '_')}-{k:02d}")
        for category in config.categories
        for k in range(config.instances)
    ]


def render_sample(index: int, config: SynthConfig, library: list[ObjectModel]) -> dict:
    """Render image ``index``: its object, RGB, depth and rectangles."""
    import mujoco

    scenes = config.seed if config.scene_seed is None else config.scene_seed
    rng = random.Random(f"{scenes}:image:{index}")
    obj = library[rng.randrange(len(library))]
    for _ in range(MAX_PLACEMENTS):
        (x, y), yaw = place(config.table, rng)
        xml = standalone_xml(
            config.camera, config.table, [obj.to_mjcf("obj", (x, y), yaw)], rng, [obj.assets_mjcf("obj")]
        )
        model = mujoco.MjModel.from_xml_string(xml)
        data = mujoco.MjData(model)
        mujoco.mj_step(model, data, nstep=SETTLE_STEPS)
        grasps = object_grasps(obj, body_pose(model, data, "obj"), config.camera)
        positives = [g for g in grasps if g.allowed]
        if positives and all(_inside(g.rectangle, config.camera) for g in positives):
            break
    else:
        raise RuntimeError(f"image {index}: could not place {obj.object_id} fully in view")
    with CameraRenderer(model, config.camera) as renderer:
        rgb, depth = renderer.render(data)
    return {
        "index": index,
        "object": obj,
        "rgb": rgb,
        "depth": depth,
        "positives": [g.rectangle for g in positives],
        "parts": [g.part for g in positives],
        "negatives": [g.rectangle for g in grasps if not g.allowed],
    }


def _inside(rect, camera: CellCamera) -> bool:
    pts = rect.points
    return bool(
        np.all(pts >= MARGIN_PX)
        and np.all(pts[:, 0] <= camera.width - MARGIN_PX)
        and np.all(pts[:, 1] <= camera.height - MARGIN_PX)
    )


def write_sample(out: Path, sample: dict) -> tuple[str, ObjectInfo]:
    image_id = f"pcd{sample['index']:04d}" if sample["index"] < 10000 else f"pcd{sample['index']}"
    Image.fromarray(sample["rgb"]).save(out / f"{image_id}r.png")
    write_depth_tiff(out / f"{image_id}d.tiff", sample["depth"])
    write_cornell_rectangles(out / f"{image_id}cpos.txt", sample["positives"])
    write_cornell_rectangles(out / f"{image_id}cneg.txt", sample["negatives"])
    (out / f"{image_id}parts.txt").write_text("".join(p + "\n" for p in sample["parts"]))
    obj = sample["object"]
    return image_id, ObjectInfo(obj.object_id, obj.object_id.replace("_", " ").replace("-", " "), obj.category)


_WORKER: tuple[SynthConfig, list[ObjectModel]] | None = None


def _init_worker(config: SynthConfig) -> None:
    global _WORKER
    _WORKER = (config, object_library(config))


def _render_in_worker(index: int) -> dict:
    config, library = _WORKER
    return render_sample(index, config, library)


def write_synthetic_dataset(
    out: Path, images: int, config: SynthConfig, workers: int = 1, progress: bool = True
) -> Path:
    """Render and write ``images`` images; returns the output folder."""
    out.mkdir(parents=True, exist_ok=True)
    mapping = {}
    bar = progress_bar(total=images, desc="rendering", unit="img", disable=not progress)
    if workers <= 1:
        _init_worker(config)
        results = map(_render_in_worker, range(images))
        for sample in results:
            image_id, info = write_sample(out, sample)
            mapping[image_id] = info
            bar.update()
    else:
        # spawn, not fork: a forked child inherits the parent's OpenGL context and can hang on it
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
            for sample in pool.imap(_render_in_worker, range(images), chunksize=4):
                image_id, info = write_sample(out, sample)
                mapping[image_id] = info
                bar.update()
    bar.close()
    write_object_map(out / "objects.csv", mapping)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.synth",
        description="Render a synthetic Cornell-format grasp dataset from the simulated cell "
        "(19 household categories, grasp semantics per part).",
        epilog="example: python -m training.synth --out data/synth --images 1000 --seed 0 --workers 2",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--images", type=int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the object library and the scenes")
    parser.add_argument(
        "--scene-seed",
        type=int,
        help="seed of the scenes alone (default: --seed): with the training "
        "set's --seed, a test set of the same objects in new poses",
    )
    parser.add_argument("--instances", type=int, default=8, help="objects per category (default 8)")
    parser.add_argument("--categories", help="comma-separated subset of: " + ", ".join(CATEGORIES))
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="render processes (default: all cores)"
    )
    args = parser.parse_args(argv)
    if args.images < 1 or args.instances < 1:
        parser.error("--images and --instances must be at least 1")
    categories = CATEGORIES
    if args.categories:
        categories = tuple(c.strip() for c in args.categories.split(","))
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            parser.error(f"unknown categories {unknown}; known: {', '.join(CATEGORIES)}")
    config = SynthConfig(seed=args.seed, instances=args.instances, categories=categories, scene_seed=args.scene_seed)
    write_synthetic_dataset(args.out, args.images, config, args.workers, progress=True)
    print(f"wrote {args.images} images of {len(categories) * args.instances} objects to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
