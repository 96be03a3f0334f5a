"""Write a synthetic grasp dataset in Cornell format, rendered from the simulated cell.

Each image shows one object (``--objects 1-1``, the default) or several of the
simulated library (19 household categories, ``--instances`` objects each)
resting at random, non-overlapping poses on the table, seen by the cell's
top-down camera. Positive rectangles come from the objects' allowed grasp
regions, negatives from forbidden parts and wrong angles. Beside the Cornell
files: ``pcdNNNNparts.txt`` (the part of each positive), ``pcdNNNNscene.json``
(each object's category, colour word, size, position and grasp regions in
pixels, the object and part of each positive, the segments of the mask),
``pcdNNNNmask.png`` (the segment at each pixel: 0 table, i + 1 segment i),
``objects.csv`` (the first object of each image) and ``instructions.jsonl``
(referring instructions, see training.reasoning.referring). Deterministic for
a seed, whatever the number of workers.

    python -m training.synth --out data/synth --images 1000 --seed 0
    python -m training.synth --out data/clutter --images 200 --seed 5 --objects 2-5 --phrasing test
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np
from PIL import Image

from appliance.geometry import invert, transform_points
from appliance.sim.clutter import arrange, colour_word, footprint, main_colour, overlaps, size_of
from appliance.sim.objects import CATEGORIES, ObjectModel, make_object
from appliance.sim.scene import (
    CameraRenderer,
    CellCamera,
    TableConfig,
    body_pose,
    object_grasps,
    place,
    region_pixels,
    standalone_xml,
)
from training.progress import progress_bar

from .datasets.files import ObjectInfo, write_cornell_rectangles, write_depth_tiff, write_object_map
from .datasets.referring import INSTRUCTIONS_FILE
from .reasoning.referring import scene_instructions

SETTLE_STEPS = 400  # 0.8 s of simulated time at 2 ms
MAX_PLACEMENTS = 10
MARGIN_PX = 8  # positives must lie this far inside the image
TWIN_SHARE = 0.3
"""Share of cluttered scenes whose second object is another instance of the first's category."""


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
    objects: tuple[int, int] = (1, 1)
    """Fewest and most objects per scene (drawn uniformly); (1, 1) writes the first datasets' images."""
    phrasing: str = "train"
    """Which set of instruction phrasings to draw from: train or test (the two never share a phrasing)."""

    def __post_init__(self) -> None:
        low, high = self.objects
        if not 1 <= low <= high:
            raise ValueError(f"objects per scene must satisfy 1 <= min <= max, got {low}-{high}")
        if self.phrasing not in ("train", "test"):
            raise ValueError(f"phrasing must be train or test, got {self.phrasing!r}")


def object_library(config: SynthConfig) -> list[ObjectModel]:
    """The fixed set of object instances (the same for every image of a seed)."""
    rng = random.Random(f"{config.seed}:library")
    return [
        make_object(category, rng, f"{category.replace(' ', '_')}-{k:02d}")
        for category in config.categories
        for k in range(config.instances)
    ]


def render_sample(index: int, config: SynthConfig, library: list[ObjectModel]) -> dict:
    """Render image ``index``: its objects, RGB, depth, rectangles, segmentation and regions."""
    scenes = config.seed if config.scene_seed is None else config.scene_seed
    rng = random.Random(f"{scenes}:image:{index}")
    if config.objects == (1, 1):
        obj = library[rng.randrange(len(library))]
        for _ in range(MAX_PLACEMENTS):
            (x, y), yaw = place(config.table, rng)
            settled = _settle(config, [obj], [(x, y, yaw)], rng)
            if settled is not None:
                break
        else:
            raise RuntimeError(f"image {index}: could not place {obj.object_id} fully in view")
    else:
        for _ in range(MAX_PLACEMENTS * 5):
            objects = draw_objects(rng, config, library)
            placements = arrange(objects, config.table.clutter_area, rng)
            if placements is None:
                continue
            settled = _settle(config, objects, [(p.x, p.y, p.yaw) for p in placements], rng)
            if settled is not None:
                break
        else:
            raise RuntimeError(f"image {index}: could not place a scene of {config.objects} objects")
    return _render(index, config, settled)


def draw_objects(rng: random.Random, config: SynthConfig, library: list[ObjectModel]) -> list[ObjectModel]:
    """The objects of one cluttered scene: distinct instances, sometimes two of one category."""
    if config.objects[1] > len(library):
        raise ValueError(
            f"scenes of up to {config.objects[1]} objects need as many in the library, it has {len(library)}"
        )
    count = rng.randint(*config.objects)
    objects = [library[rng.randrange(len(library))]]
    while len(objects) < count:
        first = objects[0]
        twins = [o for o in library if o.category == first.category and o not in objects]
        if len(objects) == 1 and twins and rng.random() < TWIN_SHARE:
            candidate = rng.choice(twins)
        else:
            candidate = library[rng.randrange(len(library))]
        if candidate not in objects:
            objects.append(candidate)
    return objects


def _body(k: int, count: int) -> str:
    return "obj" if count == 1 else f"obj{k}"  # one object keeps the first datasets' body name


def _settle(config: SynthConfig, objects: list[ObjectModel], starts, rng: random.Random):
    """Drop the objects at their starts and let them settle; None when a positive leaves the view or
    two objects end up closer than they may (one rolled into another)."""
    import mujoco

    names = [_body(k, len(objects)) for k in range(len(objects))]
    xml = standalone_xml(
        config.camera,
        config.table,
        [obj.to_mjcf(name, (x, y), yaw) for obj, name, (x, y, yaw) in zip(objects, names, starts)],
        rng,
        [obj.assets_mjcf(name) for obj, name in zip(objects, names)],
    )
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_step(model, data, nstep=SETTLE_STEPS)
    poses = [body_pose(model, data, name) for name in names]
    grasps = [object_grasps(obj, pose, config.camera) for obj, pose in zip(objects, poses)]
    for per_object in grasps:
        positives = [g for g in per_object if g.allowed]
        if not positives or not all(_inside(g.rectangle, config.camera) for g in positives):
            return None
    if len(objects) > 1:
        prints = [footprint(obj, T[0, 3], T[1, 3], math.atan2(T[1, 0], T[0, 0])) for obj, T in zip(objects, poses)]
        if any(overlaps(prints[i], prints[j], gap=0.0) for i in range(len(prints)) for j in range(i)):
            return None
    return model, data, objects, poses, grasps


def _render(index: int, config: SynthConfig, settled) -> dict:
    model, data, objects, poses, grasps = settled
    with CameraRenderer(model, config.camera) as renderer:
        rgb, depth = renderer.render(data)
        geoms = renderer.segment(data)
    positives = [(k, g) for k, per_object in enumerate(grasps) for g in per_object if g.allowed]
    segments, mask = _segments(model, geoms, len(objects))
    return {
        "index": index,
        "object": objects[0],
        "objects": objects,
        "rgb": rgb,
        "depth": depth,
        "positives": [g.rectangle for _, g in positives],
        "parts": [g.part for _, g in positives],
        "owners": [k for k, _ in positives],
        "negatives": [g.rectangle for per_object in grasps for g in per_object if not g.allowed],
        "mask": mask,
        "scene": scene_truth(config, objects, poses, segments, positives),
    }


def _segments(model, geoms: np.ndarray, count: int) -> tuple[list[list], np.ndarray]:
    """The (object, part) of each mask value (value i + 1 is segment i; 0 is the table), and the mask."""
    import mujoco

    segments: list[list] = []
    lookup = np.zeros(model.ngeom + 1, dtype=np.uint8)  # index 0: geom id -1 (nothing)
    bodies = {_body(k, count): k for k in range(count)}
    for g in range(model.ngeom):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) or ""
        body, _, rest = name.partition("_")
        if body not in bodies:
            continue
        key = [bodies[body], rest.split("_", 1)[1]]
        if key not in segments:
            segments.append(key)
        lookup[g + 1] = segments.index(key) + 1
    return segments, lookup[np.clip(geoms, -1, model.ngeom - 1) + 1]


def scene_truth(config: SynthConfig, objects, poses, segments, positives) -> dict:
    """What the part-aware metric and the instructions need about a scene, in pixels (``pcdNNNNscene.json``)."""
    rows = []
    for obj, T in zip(objects, poses):
        u, v = config.camera.intrinsics.project(transform_points(invert(config.camera.T_base_cam), T[:3, 3][None]))[0]
        rows.append(
            {
                "object_id": obj.object_id,
                "category": obj.category,
                "colour": colour_word(main_colour(obj)),
                "size": round(size_of(obj), 6),
                "position": [round(float(T[0, 3]), 5), round(float(T[1, 3]), 5)],
                "yaw": round(math.atan2(T[1, 0], T[0, 0]), 5),
                "pixel": [round(float(u), 2), round(float(v), 2)],
                "regions": [region_pixels(r, T, config.camera) for r in obj.regions],
            }
        )
    return {
        "objects": rows,
        "segments": segments,
        "positives": [[k, g.part] for k, g in positives],
    }


def _inside(rect, camera: CellCamera) -> bool:
    pts = rect.points
    return bool(
        np.all(pts >= MARGIN_PX)
        and np.all(pts[:, 0] <= camera.width - MARGIN_PX)
        and np.all(pts[:, 1] <= camera.height - MARGIN_PX)
    )


def image_name(index: int) -> str:
    return f"pcd{index:04d}" if index < 10000 else f"pcd{index}"


def write_sample(out: Path, sample: dict) -> tuple[str, ObjectInfo]:
    image_id = image_name(sample["index"])
    Image.fromarray(sample["rgb"]).save(out / f"{image_id}r.png")
    write_depth_tiff(out / f"{image_id}d.tiff", sample["depth"])
    write_cornell_rectangles(out / f"{image_id}cpos.txt", sample["positives"])
    write_cornell_rectangles(out / f"{image_id}cneg.txt", sample["negatives"])
    (out / f"{image_id}parts.txt").write_text("".join(p + "\n" for p in sample["parts"]))
    (out / f"{image_id}scene.json").write_text(json.dumps(sample["scene"]) + "\n")
    Image.fromarray(sample["mask"]).save(out / f"{image_id}mask.png")
    obj = sample["object"]
    return image_id, ObjectInfo(obj.object_id, obj.object_id.replace("_", " ").replace("-", " "), obj.category)


def sample_instructions(sample: dict, config: SynthConfig) -> list[dict]:
    """The referring instructions of one rendered scene (drawn from their own seed: the images do not change)."""
    scenes = config.seed if config.scene_seed is None else config.scene_seed
    rng = random.Random(f"{scenes}:instructions:{sample['index']}")
    image_id = image_name(sample["index"])
    return scene_instructions(sample["scene"]["objects"], image_id, rng, config.phrasing, config.categories)


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
    with (out / INSTRUCTIONS_FILE).open("w") as instructions:

        def keep(sample: dict) -> None:
            image_id, info = write_sample(out, sample)
            mapping[image_id] = info
            instructions.writelines(json.dumps(row) + "\n" for row in sample_instructions(sample, config))
            bar.update()

        if workers <= 1:
            _init_worker(config)
            for sample in map(_render_in_worker, range(images)):
                keep(sample)
        else:
            # spawn, not fork: a forked child inherits the parent's OpenGL context and can hang on it
            context = multiprocessing.get_context("spawn")
            with context.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
                for sample in pool.imap(_render_in_worker, range(images), chunksize=4):
                    keep(sample)
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
    parser.add_argument(
        "--objects",
        default="1-1",
        help="objects per scene, MIN-MAX (default 1-1: one object, the first datasets' images); "
        "e.g. 2-5 for cluttered scenes with referring instructions",
    )
    parser.add_argument(
        "--phrasing",
        choices=["train", "test"],
        default="train",
        help="which set of instruction phrasings to draw from (a test set's are never the training set's)",
    )
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
    try:
        low, high = (int(v) for v in args.objects.split("-"))
        config = SynthConfig(
            seed=args.seed,
            instances=args.instances,
            categories=categories,
            scene_seed=args.scene_seed,
            objects=(low, high),
            phrasing=args.phrasing,
        )
    except ValueError as exc:
        parser.error(f"--objects {args.objects!r}: expected MIN-MAX with 1 <= MIN <= MAX ({exc})")
    if config.objects[1] > len(categories) * args.instances:
        parser.error(f"--objects up to {config.objects[1]} needs as many objects: --categories x --instances is fewer")
    write_synthetic_dataset(args.out, args.images, config, args.workers, progress=True)
    print(f"wrote {args.images} images of {len(categories) * args.instances} objects to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
