"""Build the RT VLM grasp dataset: LLaVA conversation JSON + the (augmented) images.

For one fold of a Cornell-format or Jacquard root, every training image is seen
as a centre crop plus ``--augment`` random views, and every positive grasp in
a view becomes one sample: an instruction, and an answer in the chosen variant
(RT: reasoning, then the pose). Test images give one sample each, carrying all
their ground-truth grasps for the metric. ``--refine-fraction`` adds follow-up
turns asking for a different grasp.

    python -m training.build_dataset --root data/synth --variant rt --split iw --fold 0 \\
        --out runs/rt-iw0 --augment 4 --refine-fraction 0.2
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from appliance.answer import AnswerFormat, AnswerVariant
from appliance.grasp import GraspPose
from training.progress import progress_bar

from .datasets import GraspDataset, GraspSample, open_dataset
from .datasets.augment import Augmentation, center_crop
from .datasets.splits import DEFAULT_FOLDS, choose_fold
from .reasoning import Category, Templates, load_templates
from .reasoning.refine import draw_refinement
from .view import VIEW_FILE, ModelView

IMAGE_TOKEN = "<image>"
TASKS = ("grasp", "describe")
DESCRIBE_QUESTIONS = (
    "What object is in the image and where is it?",
    "Describe the object in the image.",
    "what do you see on the table",
    "Which object is this, and where does it lie?",
)
PART_INSTRUCTION_RATE = 0.3
"""Share of samples whose instruction names the grasped part, where the part is known."""


@dataclass(frozen=True)
class BuildConfig:
    """How samples are made; written to ``dataset.yaml`` beside the JSON."""

    variant: str = "rt"
    decimals: int = 3
    size: int = 224
    crop: int | None = None
    augment: int = 0
    refine_fraction: float = 0.0
    seed: int = 0
    task: str = "grasp"
    """``grasp`` (instruction → answer with pose) or ``describe`` (what and where the object is:
    the turns the ``align`` stage trains the projector on)."""
    targets: str = "all"
    """Training records per view: ``all`` (one per positive grasp) or ``one`` (``central``: the same
    picture always asks for the same pose)."""
    absent_fraction: float = 0.0
    """Share of training views that also get an instruction naming an object not in the picture, answered
    with the refusal ("I see no banana here."). Above 0 the model is trained to refuse (``view.refusals``)."""

    def __post_init__(self) -> None:
        AnswerFormat(self.variant, self.decimals)  # validates both
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.augment < 0:
            raise ValueError(f"augment must be >= 0, got {self.augment}")
        for name in ("refine_fraction", "absent_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.targets not in ("all", "one"):
            raise ValueError(f"targets must be 'all' or 'one', got {self.targets!r}")

    @property
    def answer_format(self) -> AnswerFormat:
        return AnswerFormat(self.variant, self.decimals, refusals=self.absent_fraction > 0)


class SampleMaker:
    """Turns one view of an image into LLaVA conversation records."""

    def __init__(self, config: BuildConfig, templates: Templates):
        self.config, self.templates, self.fmt = config, templates, config.answer_format

    def answer(self, pose: GraspPose, reasoning: str) -> str:
        return self.fmt.render(pose, reasoning if self.fmt.variant is AnswerVariant.RT else "")

    def records(
        self, view: GraspSample, image_path: str, category: Category, rng: random.Random, all_grasps: bool
    ) -> list[dict]:
        """One record per positive grasp (training) or one per image (``all_grasps``: test)."""
        poses = [GraspPose.from_rectangle(r, view.image_size) for r in view.positives]
        parts = view.labels.parts
        grasps = [[p.x, p.y, p.theta, r.length, r.width] for p, r in zip(poses, view.positives)]
        records = []
        for i in (
            [0]
            if all_grasps
            else [central(view.positives, max(view.image_size))]
            if self.config.targets == "one"
            else range(len(poses))
        ):
            part = parts[i] if parts else None
            named = part if part in category.grasp_at and rng.random() < PART_INSTRUCTION_RATE else None
            turns = [
                ("human", f"{IMAGE_TOKEN}\n{self.templates.instruction_for(category, rng, named)}"),
                ("gpt", self.answer(poses[i], self.templates.reasoning_for(category, rng, part))),
            ]
            record = {
                "id": f"{Path(image_path).stem}_g{i}",
                "image": image_path,
                "source": view.image_id,
                "category": category.name,
                "object_id": view.object_id,
                "target": i,
                "grasps": grasps if all_grasps else [grasps[i]],
            }
            if rng.random() < self.config.refine_fraction:
                self._refine(record, turns, category, rng, i, poses, parts, grasps)
            record["conversations"] = [{"from": who, "value": text} for who, text in turns]
            records.append(record)
        if not all_grasps and rng.random() < self.config.absent_fraction:
            records.append(self.absent(view, image_path, category, rng))
        return records

    def absent(self, view: GraspSample, image_path: str, category: Category, rng: random.Random) -> dict:
        """A record whose instruction names an object of another category, answered with the refusal."""
        taken = set(category.synonyms) | {category.name}
        others = sorted(
            n
            for n, c in self.templates.categories.items()
            if c is not self.templates.fallback and not taken & set(c.synonyms)
        )
        name = rng.choice(self.templates.categories[rng.choice(others)].synonyms)
        turns = [
            {
                "from": "human",
                "value": f"{IMAGE_TOKEN}\n{rng.choice(self.templates.instructions['object']).format(object=name)}",
            },
            {"from": "gpt", "value": self.fmt.render_refusal(name)},
        ]
        return {
            "id": f"{Path(image_path).stem}_absent",
            "image": image_path,
            "source": view.image_id,
            "category": category.name,
            "object_id": view.object_id,
            "absent": name,
            "grasps": [],
            "conversations": turns,
        }

    def describe(self, view: GraspSample, image_path: str, category: Category, rng: random.Random) -> dict:
        """One description record: the object's category, shape, parts and where it lies."""
        xs = [r.center[0] / view.image_size[0] for r in view.positives]
        ys = [r.center[1] / view.image_size[1] for r in view.positives]
        where = _place_words(sum(xs) / len(xs), sum(ys) / len(ys))
        parts = ", ".join(category.parts[:-1]) + (" and " if len(category.parts) > 1 else "") + category.parts[-1]
        answer = (
            f"The object is {category.a_name} with {rng.choice(category.shape)}. Its parts: {parts}. It lies {where}."
        )
        turns = [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{rng.choice(DESCRIBE_QUESTIONS)}"},
            {"from": "gpt", "value": answer},
        ]
        return {
            "id": Path(image_path).stem,
            "image": image_path,
            "source": view.image_id,
            "category": category.name,
            "object_id": view.object_id,
            "conversations": turns,
        }

    def _refine(self, record, turns, category, rng, current, poses, parts, grasps) -> None:
        drawn = draw_refinement(rng, current, poses, parts)
        if drawn is None:
            return
        request, target = drawn
        text, reasoning = self.templates.refinement_for(request.kind, category, rng, request.part, request.side)
        turns += [("human", text), ("gpt", self.answer(poses[target], reasoning))]
        record["refinement"] = {**request.to_json(), "target": target, "grasp": grasps[target]}
        if len(record["grasps"]) == 1:
            record["grasps"].append(grasps[target])


def category_of(sample: GraspSample, templates: Templates) -> Category:
    """The sample's category: its label if the taxonomy knows it, else from its object name."""
    if sample.category in templates.categories:
        return templates.categories[sample.category]
    return templates.category_for(sample.labels.object_name or sample.category)


def build_split(
    dataset: GraspDataset, ids: list[str], split: str, config: BuildConfig, out: Path, progress: bool = True
) -> list[dict]:
    """Write the images of one split and return its records."""
    templates = load_templates()
    maker = SampleMaker(config, templates)
    augmentation = Augmentation(out_size=(config.size, config.size), crop=config.crop)
    image_dir = out / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for image_id in progress_bar(ids, desc=f"building {split}", unit="img", disable=not progress):
        sample = dataset.load(image_id, with_depth=False)
        category = category_of(sample, templates)
        rng = random.Random(f"{config.seed}:{split}:{image_id}")
        views = [center_crop(sample, config.crop, (config.size, config.size))]
        if split == "train":
            views += [augmentation(sample, rng) for _ in range(config.augment)]
        for k, view in enumerate(views):
            if not view.positives:
                continue
            name = f"{image_id}_v{k}.png" if split == "train" else f"{image_id}.png"
            Image.fromarray(view.image).save(image_dir / name)
            path = f"images/{split}/{name}"
            if config.task == "describe":
                records.append(maker.describe(view, path, category, rng))
            else:
                records += maker.records(view, path, category, rng, all_grasps=split == "test")
    return records


TIE = 0.04
"""Grasps whose distance to the middle is within this share of the view's side of the nearest one
count as equally central (the rim of a bowl, a block's two axes)."""


def central(rectangles, side: float) -> int:
    """Index of the one grasp a view asks for: the most central, and among equally central ones the
    topmost, then the one nearest horizontal.

    The rule must be a function of what the image shows. "Nearest the mean centre" alone was not: on a
    bowl every rim grasp is as near as any other, and a block's two axes share one centre, so the same
    picture asked for different poses and the model learned their average — a point inside the bowl,
    an angle between the axes (bowls, plates and mugs scored 1 of 26 on a fresh test set)."""
    centres = np.array([r.center for r in rectangles], dtype=float)
    distance = np.linalg.norm(centres - centres.mean(axis=0), axis=1)
    tied = np.flatnonzero(distance <= distance.min() + TIE * side)
    return int(min(tied, key=lambda i: (round(centres[i, 1]), round(abs(rectangles[i].angle), 2))))


def _place_words(x: float, y: float) -> str:
    """Where a point lies in the image, in words: "in the upper left of the image"."""
    v = "upper" if y < 1 / 3 else "lower" if y > 2 / 3 else "middle"
    h = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "center"
    return "in the center of the image" if (v, h) == ("middle", "center") else f"in the {v} {h} of the image"


def build(
    dataset: GraspDataset,
    split: str,
    fold: int,
    config: BuildConfig,
    out: Path,
    folds: int = DEFAULT_FOLDS,
    progress: bool = True,
) -> dict:
    """Build train and test JSON for one fold (``split='all'``: every image trains) and return the summary."""
    if split == "all":
        train_ids, test_ids = list(dataset.ids), []
    else:
        chosen = choose_fold(split, dataset.object_ids(), fold, folds, config.seed)
        train_ids, test_ids = list(chosen.train), list(chosen.test)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"config": asdict(config), "root": str(dataset.root), "split": split, "fold": fold, "splits": {}}
    for name, ids in (("train", train_ids), ("test", test_ids)):
        records = build_split(dataset, ids, name, config, out, progress)
        (out / f"{name}.json").write_text(json.dumps(records, indent=1) + "\n")
        summary["splits"][name] = {
            "images": len(ids),
            "samples": len(records),
            "refinements": sum("refinement" in r for r in records),
            "per_category": dict(sorted(Counter(r["category"] for r in records).items())),
        }
    (out / "dataset.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    ModelView(config.variant, config.decimals, config.size, config.crop, config.absent_fraction > 0).save(
        out / VIEW_FILE
    )
    return summary


def format_summary(summary: dict) -> str:
    lines = []
    for name, s in summary["splits"].items():
        lines.append(f"{name}: {s['samples']} samples from {s['images']} images ({s['refinements']} with refinement)")
        lines += [f"  {category:<16} {count}" for category, count in s["per_category"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.build_dataset",
        description="Build the reasoning-tuning dataset (LLaVA conversation JSON + images) for one fold.",
        epilog="example: python -m training.build_dataset --root data/synth --variant rt --split iw --fold 0 "
        "--out runs/rt-iw0 --augment 4 --refine-fraction 0.2",
    )
    parser.add_argument("--root", type=Path, required=True, help="Cornell-format or Jacquard dataset root")
    parser.add_argument(
        "--variant", choices=[v.value for v in AnswerVariant], default="rt", help="answer form (default rt)"
    )
    parser.add_argument(
        "--split", choices=["iw", "ow", "all"], default="iw", help="image-wise, object-wise, or all to train"
    )
    parser.add_argument("--fold", type=int, default=0, help="which fold is the test set, 0-based (default 0)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="number of folds (default 5)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--targets",
        choices=["all", "one"],
        default="all",
        help="training records per view: one per positive grasp, or one (the most central) per view",
    )
    parser.add_argument(
        "--augment", type=int, default=0, help="random views per training image besides the centre crop"
    )
    parser.add_argument("--size", type=int, default=224, help="side of the model's square input image (default 224)")
    parser.add_argument("--crop", type=int, help="square crop in source pixels before resizing (default: shorter side)")
    parser.add_argument("--decimals", type=int, default=3, help="decimals of the pose numbers (default 3)")
    parser.add_argument("--refine-fraction", type=float, default=0.0, help="share of samples with a refinement turn")
    parser.add_argument(
        "--absent-fraction",
        type=float,
        default=0.0,
        help="share of training views that also ask for an object not in the picture, answered with a refusal",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--task", choices=TASKS, default="grasp", help="grasp answers, or descriptions for the align stage"
    )
    parser.add_argument("--objects", type=Path, help="Cornell image→object mapping file")
    args = parser.parse_args(argv)
    try:
        config = BuildConfig(
            args.variant,
            args.decimals,
            args.size,
            args.crop,
            args.augment,
            args.refine_fraction,
            args.seed,
            args.task,
            args.targets,
            args.absent_fraction,
        )
        dataset = open_dataset(args.root, args.objects)
        summary = build(dataset, args.split, args.fold, config, args.out, args.folds, progress=sys.stderr.isatty())
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"wrote {args.out}/train.json, test.json, dataset.yaml and images/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
