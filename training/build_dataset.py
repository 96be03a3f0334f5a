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
import itertools
import json
import multiprocessing
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
from appliance.hints import KnowledgeError, knowledge_from_mapping
from training.progress import progress_bar

from .datasets import GraspDataset, GraspSample, open_dataset
from .datasets.augment import Augmentation, center_crop
from .datasets.referring import Instruction, SceneTruth, with_scene
from .datasets.splits import DEFAULT_FOLDS, choose_fold
from .reasoning import Category, Templates, load_templates
from .reasoning.referring import resolution
from .reasoning.refine import SIDES, Refinement, SceneGrasps, central, draw_refinement
from .view import PROMPT_ORDERS, VIEW_FILE, ModelView, check_prompt_order

TASKS = ("grasp", "describe", "locate")
DESCRIBE_QUESTIONS = (
    "What object is in the image and where is it?",
    "Describe the object in the image.",
    "what do you see on the table",
    "Which object is this, and where does it lie?",
)
DEFAULT_HINTS = "default"
"""``--hints`` without a file: the knowledge ``referring.yaml`` holds (``use_knowledge``)."""
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
    """``grasp`` (instruction → answer with pose), ``describe`` (what and where the object is:
    the turns the ``align`` stage trains the projector on) or ``locate`` (instruction → where each part of
    its object lies: a neutral ground stage that favours none of the answer variants; scenes only)."""
    targets: str = "all"
    """Training records per view: ``all`` (one per positive grasp) or ``one`` (``central``: the same
    picture always asks for the same pose)."""
    absent_fraction: float = 0.0
    """Share of training views that also get an instruction naming an object not in the picture, answered
    with the refusal ("I see no banana here."). Above 0 the model is trained to refuse (``view.refusals``)."""
    refine_rounds: int = 1
    """Most follow-up rounds a record with refinement carries (each record draws 1..this many)."""
    prompt_order: str = "image"
    """Where the image token goes in the first turn (``training.view.PROMPT_ORDERS``)."""
    hints: str | None = None
    """Every first turn's instruction carries its hint (``appliance.hints``): ``default`` from ``referring.yaml``
    (what each use's train phrasings and facts say, and which categories serve it), or a knowledge YAML file of
    your own. The table goes into view.json, so checkpoints and bundles carry it."""
    hint_masking: float = 0.0
    """Share of the training records of function instructions whose use phrase ("something to cut with") is
    replaced by 2-4 random words of the knowledge, the hint still looked up with the real phrase: only the hint
    tells the object then, so the model learns to read it and not only the phrases it memorised. In the text-only
    probe, half masked took new wordings from 28-33 % to 64-68 % right on the validation set, two seeds
    (bench/results/knowledge-probe). The words never name an object (``referring.masking_words``).
    Needs ``hints``."""

    def __post_init__(self) -> None:
        AnswerFormat(self.variant, self.decimals)  # validates both
        if self.size < 8:
            raise ValueError(f"size must be at least 8 pixels, got {self.size}")
        if self.augment < 0:
            raise ValueError(f"augment must be >= 0, got {self.augment}")
        if self.refine_rounds < 1:
            raise ValueError(f"refine_rounds must be >= 1, got {self.refine_rounds}")
        for name in ("refine_fraction", "absent_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        check_prompt_order(self.prompt_order)
        if self.targets not in ("all", "one"):
            raise ValueError(f"targets must be 'all' or 'one', got {self.targets!r}")
        if self.hints is not None:
            self.knowledge  # noqa: B018 - a missing or malformed file is an error before anything is built
        if not 0.0 <= self.hint_masking <= 1.0:
            raise ValueError(f"hint_masking must be in [0, 1], got {self.hint_masking}")
        if self.hint_masking > 0 and self.hints is None:
            raise ValueError("hint_masking needs hints: without a hint a masked instruction names nothing")

    @property
    def answer_format(self) -> AnswerFormat:
        return AnswerFormat(self.variant, self.decimals, refusals=self.absent_fraction > 0)

    @property
    def view(self) -> ModelView:
        """What the records teach, as ``view.json`` records it."""
        return ModelView(
            self.variant, self.decimals, self.size, self.crop, self.absent_fraction > 0, self.prompt_order,
            self.knowledge,
        )  # fmt: skip

    @property
    def knowledge(self) -> dict | None:
        """The hints' table in its YAML form (``hints``), checked."""
        if self.hints is None:
            return None
        if self.hints == DEFAULT_HINTS:
            from .reasoning.referring import load_referring, use_knowledge

            return use_knowledge(load_templates(), load_referring()).to_mapping()
        path = Path(self.hints)
        if not path.is_file():
            raise ValueError(f"hints: no knowledge file {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ValueError(f"hints: {path} is not YAML: {exc}") from None
        try:
            return knowledge_from_mapping(data).to_mapping()
        except KnowledgeError as exc:
            raise ValueError(f"hints: {path}: {exc}") from None


class SampleMaker:
    """Turns one view of an image into LLaVA conversation records."""

    def __init__(self, config: BuildConfig, templates: Templates):
        self.config, self.templates, self.fmt, self.view = config, templates, config.answer_format, config.view
        self._masking_words: list[str] | None = None

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
                ("human", self.view.first_turn(self.templates.instruction_for(category, rng, named))),
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
                self._refine(record, turns, rng, poses[i], 0, SceneGrasps(view.positives, view.image_size, parts),
                             {0: category})  # fmt: skip
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
                "value": self.view.first_turn(rng.choice(self.templates.instructions["object"]).format(object=name)),
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
            {"from": "human", "value": self.view.first_turn(rng.choice(DESCRIBE_QUESTIONS))},
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

    def scene_records(
        self,
        view: GraspSample,
        image_path: str,
        objects: tuple[dict, ...],
        instructions: list[Instruction],
        rng: random.Random,
        test: bool,
    ) -> list[dict]:
        """One record per referring instruction about a view of a scene: the reasoning resolves the instruction
        to its object ("The one on the left is a bottle."), says how such an object is held, and gives the
        object's most central grasp; an ``absent`` instruction is refused (training: on ``absent_fraction`` of
        the views). Follow-ups as in ``records``."""
        categories = {k: self.templates.category(o["category"]) for k, o in enumerate(objects)}
        owners = view.labels.owners
        parts = view.labels.parts or ("",) * len(view.positives)
        scene = SceneGrasps(view.positives, view.image_size, tuple(p or None for p in parts), owners,
                            unique_names(objects))  # fmt: skip
        poses = scene.poses
        records = []
        for instruction in instructions:
            base = _instruction_base(view, image_path, instruction)
            if instruction.kind == "absent":
                if test or rng.random() < self.config.absent_fraction:
                    records.append(self._refusal(base, instruction, grasps=[]))
                continue
            own = [i for i, k in enumerate(owners) if k == instruction.target]
            if not own:  # the target left this view
                continue
            i = own[central([view.positives[j] for j in own], max(view.image_size))]
            category = categories[instruction.target]
            opening = resolution(instruction.kind, category.a_name, instruction.facts)
            reasoning = " ".join(t for t in (opening, self.templates.reasoning_for(category, rng, parts[i])) if t)
            asked = self.ask(instruction, rng, test)
            turns = [("human", asked), ("gpt", self.answer(poses[i], reasoning))]
            grasps = [[p.x, p.y, p.theta, r.length, r.width] for p, r in zip(poses, view.positives)]
            record = {**base, "category": category.name, "object_id": objects[instruction.target].get("object_id"),
                      "target": instruction.target, "grasps": [grasps[j] for j in own] if test else [grasps[i]]}  # fmt: skip
            if not test and rng.random() < self.config.refine_fraction:
                self._refine(record, turns, rng, poses[i], instruction.target, scene, categories)
            record["conversations"] = _turns(turns)
            records.append(record)
        return records

    def locate(
        self,
        view: GraspSample,
        image_path: str,
        scene: SceneTruth,
        instructions: list[Instruction],
        rng: random.Random,
        test: bool,
    ) -> list[dict]:
        """One record per referring instruction: the answer names where each visible part of the object lies,
        allowed and forbidden parts alike ("The handle of the mug is at x 0.62 y 0.41. The body of the mug is at
        x 0.55 y 0.47."), with no angle and no brackets: a format none of Table I's rows answers in, so the base
        it trains favours none of them. A part's point is its pixel nearest the part's centroid (on the part
        even where the part is a ring). ``absent`` instructions are refused as in ``scene_records``."""
        d = self.config.decimals
        h, w = view.image.shape[:2]
        records = []
        for instruction in instructions:
            base = _instruction_base(view, image_path, instruction)
            if instruction.kind == "absent":
                if test or rng.random() < self.config.absent_fraction:
                    records.append(self._refusal(base, instruction, points=[]))
                continue
            category = self.templates.category(scene.objects[instruction.target]["category"])
            points = []
            for value, (owner, part) in enumerate(scene.segments, start=1):
                if owner != instruction.target:
                    continue
                pixels = np.argwhere(view.mask == value)
                if len(pixels) == 0:
                    continue
                row, col = pixels[np.argmin(((pixels - pixels.mean(axis=0)) ** 2).sum(axis=1))]
                points.append((part, (col + 0.5) / w, (row + 0.5) / h))
            if not points:  # the target left this view
                continue
            rng.shuffle(points)
            answer = " ".join(
                f"The {part} of the {category.name} is at x {x:.{d}f} y {y:.{d}f}." for part, x, y in points
            )
            turns = [("human", self.ask(instruction, rng, test)), ("gpt", answer)]
            records.append({**base, "category": category.name,
                            "object_id": scene.objects[instruction.target].get("object_id"),
                            "target": instruction.target, "points": [[p, round(x, 4), round(y, 4)] for p, x, y in points],
                            "conversations": _turns(turns)})  # fmt: skip
        return records

    def ask(self, instruction: Instruction, rng: random.Random, test: bool) -> str:
        """The first turn of a referring instruction, with its hint; a training function instruction's use phrase
        masked on ``hint_masking`` of the records (the hint still from the real phrase)."""
        masking = self.config.hint_masking
        if test or not masking or instruction.kind != "function" or rng.random() >= masking:
            return self.view.first_turn(instruction.text)
        if not self.view.hints.hint(instruction.text):  # a table of one's own may say nothing: then only the words can
            return self.view.first_turn(instruction.text)
        phrase = use_phrase(instruction)
        words = self.masking_words()
        said = instruction.text.replace(phrase, " ".join(rng.sample(words, rng.randint(2, 4))), 1)
        return self.view.first_turn(said, hint_from=instruction.text)

    def masking_words(self) -> list[str]:
        """The words masked use phrases are drawn from (``referring.masking_words``: no object names)."""
        if self._masking_words is None:
            from .reasoning.referring import masking_words

            self._masking_words = masking_words(self.view.hints, self.templates)
        return self._masking_words

    def _refusal(self, base: dict, instruction: Instruction, **empty) -> dict:
        """The record of an ``absent`` instruction, answered with the refusal (``empty``: its empty label lists)."""
        turns = [
            ("human", self.view.first_turn(instruction.text)),
            ("gpt", self.fmt.render_refusal(instruction.object)),
        ]
        return {**base, "category": None, "object_id": None, "absent": instruction.object, **empty,
                "conversations": _turns(turns)}  # fmt: skip

    def describe_scene(self, view: GraspSample, image_path: str, objects: tuple[dict, ...], rng: random.Random) -> dict:
        """One description of a scene: every object in view with its colour and where it lies."""
        seen = []
        for k, o in enumerate(objects):
            centres = [r.center for r, owner in zip(view.positives, view.labels.owners) if owner == k]
            if not centres:
                continue
            x = sum(c[0] for c in centres) / len(centres) / view.image_size[0]
            y = sum(c[1] for c in centres) / len(centres) / view.image_size[1]
            category = self.templates.category(o["category"])
            colour = f"{o['colour']} " if o.get("colour") else ""
            seen.append(f"a {colour}{category.name} {_place_words(x, y)}")
        answer = "On the table: " + "; ".join(seen) + "." if seen else "The table is empty."
        turns = [("human", self.view.first_turn(rng.choice(DESCRIBE_QUESTIONS))), ("gpt", answer)]
        first = objects[0]
        return {"id": Path(image_path).stem, "image": image_path, "source": view.image_id,
                "category": first["category"], "object_id": first.get("object_id"), "conversations": _turns(turns)}  # fmt: skip

    def _refine(self, record, turns, rng, pose, owner: int, scene: SceneGrasps, categories: dict) -> None:
        """Follow-up rounds (1 to ``refine_rounds``): each asks for a change the picture allows, and the answer
        states it ("Rotating the gripper by 90 degrees: -0.79 to 0.79.") before the new pose."""
        rounds = []
        for _ in range(rng.randint(1, self.config.refine_rounds)):
            drawn = draw_refinement(rng, pose, owner, scene)
            if drawn is None:
                break
            request, after = drawn
            category = categories[owner]
            words = self._change_words(request, pose, after)
            text, reasoning = self.templates.refinement_for(request.kind, category, rng, **words)
            if request.kind == "object":
                owner, category = request.object, categories[request.object]
                near = scene.nearest(after, owner)
                reasoning += " " + self.templates.reasoning_for(category, rng, scene.parts[near])
            turns += [("human", text), ("gpt", self.answer(after, reasoning))]
            rounds.append({**request.to_json(), "before": [pose.x, pose.y, pose.theta],
                           "grasp": [after.x, after.y, after.theta]})  # fmt: skip
            pose = after
        if rounds:
            record["refinement"] = rounds[0]
            record["refinements"] = rounds

    def _change_words(self, request: Refinement, before: GraspPose, after: GraspPose) -> dict:
        d = self.fmt.decimals
        if request.kind == "rotate":
            return {"before": f"{before.theta:.{d}f}", "after": f"{after.theta:.{d}f}"}
        if request.kind == "side":
            axis = "x" if SIDES[request.side][0] else "y"
            a, b = (before.x, after.x) if axis == "x" else (before.y, after.y)
            return {"side": request.side, "axis": axis, "before": f"{a:.{d}f}", "after": f"{b:.{d}f}"}
        if request.kind == "part":
            return {"part": request.part}
        return {"name": request.name}


def use_phrase(instruction: Instruction) -> str:
    """The use phrase a function instruction holds ("something to cut with"), the longest of its use's."""
    from .reasoning.referring import load_referring

    sets = load_referring().uses[instruction.facts["use"]]
    found = [p for p in (*sets["train"], *sets["test"]) if p in instruction.text]
    if not found:
        raise ValueError(
            f"instruction {instruction.id}: {instruction.text!r} holds no phrase of {instruction.facts['use']!r}"
        )
    return max(found, key=len)


def _instruction_base(view: GraspSample, image_path: str, instruction: Instruction) -> dict:
    """The fields every record about one referring instruction in one view starts with."""
    return {"id": f"{Path(image_path).stem}_{instruction.id}", "image": image_path, "source": view.image_id,
            "instruction": instruction.id, "kind": instruction.kind}  # fmt: skip


def _turns(turns: list[tuple[str, str]]) -> list[dict]:
    return [{"from": who, "value": text} for who, text in turns]


def unique_names(objects: tuple[dict, ...]) -> dict[int, str]:
    """The objects a follow-up can name by their category alone ("the bottle instead"): those alone in it."""
    counts = Counter(o["category"] for o in objects)
    return {k: o["category"] for k, o in enumerate(objects) if counts[o["category"]] == 1}


def category_of(sample: GraspSample, templates: Templates) -> Category:
    """The sample's category: its label if the taxonomy knows it, else from its object name."""
    if sample.category in templates.categories:
        return templates.categories[sample.category]
    return templates.category_for(sample.labels.object_name or sample.category)


class ImageBuilder:
    """Writes the views of one image and returns its records. Each image draws from its own seeded generator, so
    the records are the same whichever process builds which image."""

    def __init__(self, dataset: GraspDataset, split: str, config: BuildConfig, out: Path):
        self.dataset, self.split, self.config = dataset, split, config
        self.templates = load_templates()
        self.maker = SampleMaker(config, self.templates)
        self.augmentation = Augmentation(out_size=(config.size, config.size), crop=config.crop)
        self.image_dir = out / "images" / split
        self.asked: dict[str, list[Instruction]] = {}
        for instruction in dataset.instructions:
            self.asked.setdefault(instruction.image, []).append(instruction)

    def __call__(self, image_id: str) -> list[dict]:
        config, split, maker, asked = self.config, self.split, self.maker, self.asked
        sample = self.dataset.load(image_id, with_depth=False)
        category = category_of(sample, self.templates)
        rng = random.Random(f"{config.seed}:{split}:{image_id}")
        scene = self.dataset.scene(image_id) if image_id in asked else None
        if scene is not None:
            sample = with_scene(sample, scene)
        views = [center_crop(sample, config.crop, (config.size, config.size))]
        if split == "train":
            views += [self.augmentation(sample, rng) for _ in range(config.augment)]
        records = []
        for k, view in enumerate(views):
            if not view.positives:
                continue
            name = f"{image_id}_v{k}.png" if split == "train" else f"{image_id}.png"
            Image.fromarray(view.image).save(self.image_dir / name)
            path = f"images/{split}/{name}"
            if config.task == "locate":
                if scene is None:
                    continue
                instructions = [i for i in asked[image_id] if k == 0 or i.kind != "spatial"]
                records += maker.locate(view, path, scene, instructions, rng, test=split != "train")
            elif scene is not None and config.task == "describe":
                records.append(maker.describe_scene(view, path, scene.objects, rng))
            elif config.task == "describe":
                records.append(maker.describe(view, path, category, rng))
            elif scene is not None:
                # a rotated view turns the robot's left and right: spatial instructions only on the upright one
                instructions = [i for i in asked[image_id] if k == 0 or i.kind != "spatial"]
                records += maker.scene_records(view, path, scene.objects, instructions, rng, test=split != "train")
            else:
                records += maker.records(view, path, category, rng, all_grasps=split != "train")
        return records


_BUILDER: ImageBuilder | None = None
"""A worker process's builder (``build_split`` with workers)."""


def _init_builder(dataset: GraspDataset, split: str, config: BuildConfig, out: Path) -> None:
    global _BUILDER
    _BUILDER = ImageBuilder(dataset, split, config, out)


def _build_in_worker(image_id: str) -> list[dict]:
    return _BUILDER(image_id)


def build_split(
    dataset: GraspDataset,
    ids: list[str],
    split: str,
    config: BuildConfig,
    out: Path,
    progress: bool = True,
    workers: int = 1,
) -> list[dict]:
    """Write the images of one split and return its records, in ``ids``' order whatever ``workers`` is."""
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    bar = progress_bar(total=len(ids), desc=f"building {split}", unit="img", disable=not progress)
    if workers <= 1 or len(ids) < 2 * workers:
        per_image = map(ImageBuilder(dataset, split, config, out), ids)
        for image_records in per_image:
            records += image_records
            bar.update()
    else:
        # spawn, not fork: a caller that has loaded torch (bench/table1_fair.py runs this stage in process) holds
        # threads a forked child would inherit stuck
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_builder, initargs=(dataset, split, config, out)) as pool:
            for image_records in pool.imap(_build_in_worker, ids, chunksize=8):
                records += image_records
                bar.update()
    bar.close()
    return records


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
    validation: int = 0,
    workers: int = 1,
) -> dict:
    """Build train and test JSON for one fold (``split='all'``: every image trains) and return the summary.
    ``validation`` training images (drawn with the seed) are set aside as ``val.json``, scored like the test set:
    learning curves read them, never the test fold."""
    if config.task == "locate" and not dataset.instructions:
        raise ValueError(
            f"--task locate needs referring instructions and scene truth; {dataset.root} has none "
            "(make scenes with python -m training.synth)"
        )
    out.mkdir(parents=True, exist_ok=True)
    summary = {"config": asdict(config), "root": str(dataset.root), "split": split, "fold": fold, "splits": {}}
    parts = fold_ids(dataset, split, fold, folds, config.seed, validation)
    for name, ids in parts.items():
        records = build_split(dataset, ids, name, config, out, progress, workers)
        (out / f"{name}.json").write_text(json.dumps(records, indent=1) + "\n")
        summary["splits"][name] = {
            "images": len(ids),
            "samples": len(records),
            "refinements": sum("refinement" in r for r in records),
            "per_category": dict(sorted(Counter(r["category"] or "(refused)" for r in records).items())),
        }
    (out / "dataset.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    config.view.save(out / VIEW_FILE)
    return summary


def fold_ids(
    dataset: GraspDataset, split: str, fold: int, folds: int, seed: int, validation: int
) -> dict[str, list[str]]:
    """The image ids of each part of a build, in the order its records are written: train, test and (with
    ``validation`` > 0) val, the training images set aside."""
    if split == "all":
        train_ids, test_ids = list(dataset.ids), []
    else:
        chosen = choose_fold(split, dataset.split_keys(split), fold, folds, seed)
        train_ids, test_ids = list(chosen.train), list(chosen.test)
    if not 0 <= validation < len(train_ids):
        raise ValueError(
            f"--validation must be in 0..{len(train_ids) - 1} (the fold's training images), got {validation}"
        )
    val_ids = sorted(random.Random(f"{seed}:validation").sample(sorted(train_ids), validation))
    set_aside = set(val_ids)
    parts = {"train": [i for i in train_ids if i not in set_aside], "test": test_ids}
    return parts | ({"val": val_ids} if validation else {})


CHECK_IMAGES = 8
"""How many training images ``check`` builds again (``--check``): a few seconds."""


def check(
    dataset: GraspDataset,
    split: str,
    fold: int,
    config: BuildConfig,
    out: Path,
    folds: int = DEFAULT_FOLDS,
    validation: int = 0,
    images: int = CHECK_IMAGES,
) -> str | None:
    """Whether ``out`` still holds what this code writes: None when its train.json begins with the records built
    now for the fold's first ``images`` training images (into a scratch folder: ``out`` is not touched), else what
    differs. A finished build that our code would now write otherwise (a change to the hints, the reasoning, the
    phrasings) is stale though its command is the same; the pipeline asks this before it skips one."""
    import tempfile

    if images < 1:
        raise ValueError(f"--check builds at least one image again, got {images}")
    written = out / "train.json"
    if not written.is_file():
        return f"{written} is missing"
    ids = fold_ids(dataset, split, fold, folds, config.seed, validation)["train"][:images]
    with tempfile.TemporaryDirectory(prefix="rtgrasp-check-") as scratch:
        fresh = build_split(dataset, ids, "train", config, Path(scratch), progress=False)
    fresh = json.loads(json.dumps(fresh))  # as train.json holds them: lists for tuples
    checked = set(ids)  # the records train.json holds for those images: the first ones, in the same order
    old = list(itertools.takewhile(lambda record: record.get("source") in checked, json.loads(written.read_text())))
    for k, (was, now) in enumerate(zip(old, fresh)):
        if was != now:
            field = next((key for key in sorted({*was, *now}) if was.get(key) != now.get(key)), "?")
            a, b = json.dumps(was.get(field)), json.dumps(now.get(field))
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            start = max(0, at - 40)
            return (
                f"record {k} ({now.get('image')}) differs in {field!r}: …{a[start : at + 60]}… → …{b[start : at + 60]}…"
            )
    if len(old) != len(fresh):
        return f"{written} holds {len(old)} records of the first {len(ids)} images; the code now writes {len(fresh)}"
    return None


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
        "--split",
        choices=["iw", "ow", "cw", "all"],
        default="iw",
        help="image-wise, object-wise, category-wise (whole categories held out), or all to train",
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
        "--refine-rounds", type=int, default=1, help="most follow-up rounds of a record with refinement (default 1)"
    )
    parser.add_argument(
        "--absent-fraction",
        type=float,
        default=0.0,
        help="share of training views that also ask for an object not in the picture, answered with a refusal",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validation",
        type=int,
        default=0,
        metavar="N",
        help="set N of the fold's training images aside as val.json (scored like test.json; for learning curves "
        "that never see the test fold)",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="grasp",
        help="grasp answers; descriptions for the align stage; or locate: where each part of the instruction's "
        "object lies (a neutral ground stage; needs scenes with instructions)",
    )
    parser.add_argument(
        "--prompt-order",
        choices=PROMPT_ORDERS,
        default="image",
        help="what the first turn shows first: the image (LLaVA-1.5's usual '<image>\\n{instruction}', default) or "
        "the instruction ('{instruction}\\n<image>': the image tokens can read what is asked)",
    )
    parser.add_argument(
        "--hints",
        nargs="?",
        const=DEFAULT_HINTS,
        metavar="FILE",
        help="append to every first instruction the objects a knowledge table says its words are for ('... whip "
        "cream? Hint: a whisk.'): the table referring.yaml makes, or FILE (appliance/hints.py shows its form); "
        "bundles carry it, so users extend it without retraining",
    )
    parser.add_argument(
        "--hint-masking",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of training function instructions whose use phrase becomes random words, the hint still from "
        "the real phrase, so the model learns to read hints (needs --hints; default 0)",
    )
    parser.add_argument("--objects", type=Path, help="Cornell image→object mapping file")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes that build images side by side (default 1); the output is the same whatever the number",
    )
    parser.add_argument(
        "--check",
        type=int,
        nargs="?",
        const=CHECK_IMAGES,
        metavar="N",
        help=f"build nothing: exit 0 if --out's train.json begins with the records this code writes for the first N "
        f"training images (default {CHECK_IMAGES}), 1 (saying where they differ) if not, so a finished build that "
        "the code would now write otherwise is found (the pipeline asks before skipping one)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
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
            args.refine_rounds,
            args.prompt_order,
            args.hints,
            args.hint_masking,
        )
        dataset = open_dataset(args.root, args.objects)
        if args.check is not None:
            differs = check(dataset, args.split, args.fold, config, args.out, args.folds, args.validation, args.check)
            print(f"{args.out}: {differs}" if differs else f"{args.out}: the records are what this code writes")
            return 1 if differs else 0
        summary = build(
            dataset,
            args.split,
            args.fold,
            config,
            args.out,
            args.folds,
            sys.stderr.isatty(),
            args.validation,
            args.workers,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"wrote {args.out}/train.json, test.json{', val.json' if args.validation else ''}, dataset.yaml and images/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
