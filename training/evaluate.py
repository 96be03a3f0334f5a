"""Evaluate a LLaVA grasp model on a dataset: greedy answers, parsed, scored with the rectangle metric.

    python -m training.evaluate --model runs/rt-merged --root data/synth --split iw --fold 0 --json runs/eval.json

Each test image is shown the way the model was trained (its ``view.json``:
crop and size) with an instruction naming the object when the dataset knows
it. Reports accuracy, parse failures, mean answer tokens, images per second,
and how often the reasoning names the right category.

``--bundle`` scores an exported bundle instead, through the appliance's own
runtime (onnxruntime + llama.cpp, numpy preprocessing from the camera image):

    python -m training.evaluate --bundle bundles/rt-q4 --root data/synth --split iw --fold 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from appliance.answer import AnswerParseError, AnswerRefused
from appliance.grasp import GraspPose, score_pose
from appliance.runtime.model import MAX_NEW_TOKENS  # one answer budget for torch and the runtime (no SDK imported)
from appliance.runtime.objects import CategoryNames

from .datasets import GraspDataset, open_dataset
from .datasets.augment import center_crop
from .datasets.referring import with_scene
from .datasets.splits import choose_fold
from .judging import baselines, by_kind, evaluation_items, judge, scores, unparsed
from .model import PROMPT_TEMPLATE
from .reasoning import load_templates
from .view import ModelView
from .visualize import GREEN, RED, draw_grasps


@dataclass
class Evaluation:
    """Per-image outcomes and the summary figures."""

    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    batch: int = 1
    """Requests answered together (``ANSWER_BATCH`` for a torch checkpoint, 1 for a bundle): the timings are per
    request of such batches."""

    def summary(self) -> dict:
        n = len(self.rows)
        parsed = [r for r in self.rows if r["parsed"]]
        named = [r for r in self.rows if r["stated_category"] is not None or r["category"]]
        return {
            **scores(self.rows),
            "n": n,
            "parse_failure_rate": 1 - len(parsed) / n if n else 0.0,
            "mean_answer_tokens": sum(r["tokens"] for r in self.rows) / n if n else 0.0,
            "images_per_second": n / self.seconds if self.seconds else 0.0,
            "ms_per_image": 1000 * self.seconds / n if n else 0.0,
            "answer_batch": self.batch,
            "category_accuracy": sum(r["stated_category"] == r["category"] for r in named) / len(named)
            if named
            else None,
            **self.refinement_summary(),
            **self.referring_summary(),
            **self.target_check_summary(),
        }

    def target_check_summary(self) -> dict:
        """For a bundle with a target check: the share of parsed answers it moved, and the scores of the poses as the
        model wrote them (``model_alone``), beside the summary's own, which are the poses the appliance would use."""
        checked = [r for r in self.rows if "written" in r and r["parsed"]]
        if not checked:
            return {}
        alone = [r | r["written_judged"] if r.get("written_judged") else r for r in self.rows]
        return {
            "target_check": {
                "moved": sum(bool(r["written"]) for r in checked) / len(checked),
                "model_alone": {**scores(alone), "by_kind": by_kind(alone)},
            }
        }

    def referring_summary(self) -> dict:
        """On a root with instructions: scores per kind, the category named right per kind, and refusals (of
        ``absent`` instructions, where they are right, and of every other, where they are wrong). For a model
        trained with hints, per kind: the share of instructions that got one, and of those with an object meant,
        the share whose hint named it (what the model could copy: function instructions should be near 1, the
        others near 0, see ``appliance.hints``)."""
        if not any(r.get("kind") for r in self.rows):
            return {}
        kinds = sorted({r["kind"] for r in self.rows if r.get("kind")})
        named = {}
        for kind in kinds:
            rows = [r for r in self.rows if r.get("kind") == kind and r["category"]]
            named[kind] = sum(r["stated_category"] == r["category"] for r in rows) / len(rows) if rows else None
        hinted = {}
        for kind in kinds:
            rows = [r for r in self.rows if r.get("kind") == kind and "hint" in r]
            if rows:  # a model trained with hints: how often the hint named the object meant, and any object
                right = [r for r in rows if "hint_right" in r]
                hinted[kind] = {
                    "hinted": sum(bool(r["hint"]) for r in rows) / len(rows),
                    "right": sum(r["hint_right"] for r in right) / len(right) if right else None,
                }
        absent = [r for r in self.rows if r.get("kind") == "absent"]
        present = [r for r in self.rows if r.get("kind") and r["kind"] != "absent"]
        return {
            "by_kind": by_kind(self.rows),
            "category_by_kind": named,
            **({"hint_by_kind": hinted} if hinted else {}),
            "refused_absent": sum(bool(r.get("refused")) for r in absent) / len(absent) if absent else None,
            "refused_present": sum(bool(r.get("refused")) for r in present) / len(present) if present else None,
        }

    def refinement_summary(self) -> dict:
        """Refinement turns (``evaluate(refine=True)``): how many, the share that did what was asked and is a
        correct grasp (both, and each alone), and the success per request kind beside the baselines' on the
        same requests (``repeat``: the first pose again; ``rule``: turned by 90° or moved by 0.1)."""
        turns = [r["refinement"] for r in self.rows if r.get("refinement")]
        if not turns:
            return {}
        n = len(turns)

        def success(rows: list[dict], who: str | None = None) -> float | None:
            judged = [(t["baselines"] or {}).get(who) if who else t for t in rows]
            judged = [j for j in judged if j is not None]
            return sum(j["satisfied"] and j["correct"] for j in judged) / len(judged) if judged else None

        kinds = sorted({t["kind"] for t in turns})
        per_kind = {}
        for kind in kinds:
            rows = [t for t in turns if t["kind"] == kind]
            moved = [t for t in rows if t.get("written_judged")]
            per_kind[kind] = {
                "n": len(rows),
                "success": success(rows),
                # the model's own poses: where a check moved one, as the model wrote it
                "model_alone": success([t | t["written_judged"] if t.get("written_judged") else t for t in rows]),
                "moved": len(moved) / len(rows),
                **(
                    {"repeat": success(rows, "repeat"), "rule": success(rows, "rule")} if "baselines" in rows[0] else {}
                ),
            }
        return {
            "refinement_turns": n,
            "refinement_success": sum(t["satisfied"] and t["correct"] for t in turns) / n,
            "refinement_satisfied": sum(t["satisfied"] for t in turns) / n,
            "refinement_correct": sum(t["correct"] for t in turns) / n,
            "refinement_by_kind": per_kind,
        }


def stated_category(text: str, names: CategoryNames) -> str | None:
    """The category the reasoning names first, read as the appliance reads it (``CategoryNames.first``: synonyms
    count, a name before "one" or another name is a modifier, "The orange one is a spoon" names a spoon)."""
    return names.first(text)


def held_out(dataset: GraspDataset, split: str, fold: int, seed: int = 0) -> tuple[GraspDataset, list[str]]:
    """The dataset and images to score: a fold's test set, or every image (``all``: a separately generated set).
    A category-wise fold scores only the instructions about its held-out categories."""
    if split == "all":
        return dataset, list(dataset.ids)
    chosen = choose_fold(split, dataset.split_keys(split), fold, seed=seed)
    if split == "cw" and dataset.instructions:
        dataset = dataset.with_targets_in(chosen.categories)
    return dataset, list(chosen.test)


def held_out_ids(dataset: GraspDataset, split: str, fold: int, seed: int = 0) -> list[str]:
    """The images ``held_out`` scores."""
    return held_out(dataset, split, fold, seed)[1]


def evaluate_heads(predict, view: ModelView, dataset: GraspDataset, ids: list[str]) -> Evaluation:
    """Score the vision stage's grasp heads (no language model involved)."""
    result = Evaluation()
    start = time.monotonic()
    poses = {}
    for image_id, instruction in evaluation_items(dataset, ids):
        sample = center_crop(dataset.load(image_id, with_depth=False), view.crop, (view.size, view.size))
        if image_id not in poses:  # instruction-blind: one pose per image, whatever is asked
            poses[image_id] = predict(sample.image)
        pose = poses[image_id]
        correct = score_pose(pose, sample.positives, sample.image_size).correct
        row = {
            "image": image_id,
            "answer": "",
            "tokens": 0,
            "category": None,
            "stated_category": None,
            "parsed": True,
            "correct": correct,
            "x": pose.x,
            "y": pose.y,
            "theta": pose.theta,
        }
        row.update(judge(dataset, image_id, instruction, pose, view))
        result.rows.append(row)
    result.seconds = time.monotonic() - start
    return result


def evaluate(
    answer_fn,
    view: ModelView,
    dataset: GraspDataset,
    ids: list[str],
    vis: Path | None = None,
    progress: bool = False,
    refine: bool = False,
    batch: bool = True,
    refine_kinds: tuple[str, ...] | None = None,
) -> Evaluation:
    """Answer, parse and score every image.

    ``answer_fn(camera_image, view_image, instruction) -> (text, tokens, extra)``: the torch model
    answers on the view (the workspace crop at the model's size, as training showed it); a bundle
    gets the whole camera image and crops it itself, as the appliance does. ``extra`` (a dict) is
    added to the image's row. With ``refine``, every parsed first answer gets one follow-up request
    (``refine_turn``) through ``answer_fn.follow_up``, in the same conversation; ``refine_kinds`` limits the
    follow-ups to those kinds (``reasoning.refine.KINDS``; a request none of them fits gets none)."""
    from training.progress import progress_bar

    templates = load_templates()
    names = CategoryNames(templates.vocabulary())
    fmt = view.answer_format
    result = Evaluation()
    start = time.monotonic()
    items = evaluation_items(dataset, ids)
    # a follow-up continues one conversation at a time; ``batch=False`` times one request alone
    many = getattr(answer_fn, "many", None) if batch and not refine else None
    size = result.batch = ANSWER_BATCH if many else 1
    bar = progress_bar(total=len(items), desc="evaluating", unit="req", disable=not progress)
    for first in range(0, len(items), size):
        requests = [
            (image_id, referral, *_request(dataset, image_id, referral, view, templates))
            for image_id, referral in items[first : first + size]
        ]
        asked = [(camera.image, sample.image, instruction) for *_, camera, sample, _, instruction in requests]
        replies = many(asked) if many else [answer_fn(*asked[0])]
        for (image_id, referral, camera, sample, category, _), (text, tokens, extra) in zip(
            requests, replies, strict=True
        ):
            row = {
                "image": image_id,
                "answer": text,
                "tokens": tokens,
                "category": category,
                "parsed": False,
                "correct": False,
                **extra,
            }
            row["stated_category"] = stated_category(text, names) if fmt.variant.value == "rt" else None
            if "hint" in row and category:  # the model was trained with hints: did the hint name the object meant?
                row["hint_right"] = templates.category(category).a_name in row["hint"]
            try:
                pose = fmt.parse(text).pose
                row.update(parsed=True, x=pose.x, y=pose.y, theta=pose.theta)
                row["correct"] = score_pose(pose, sample.positives, sample.image_size).correct
                row.update(judge(dataset, image_id, referral, pose, view))
            except AnswerRefused as exc:
                row.update(error=exc.reason, refused=True)
                row.update(judge(dataset, image_id, referral, None, view))
            except AnswerParseError as exc:
                row["error"] = exc.reason
                row.update(unparsed(dataset, image_id, referral))
            if row.get("written"):  # judged as the model wrote it, before the target check moved it
                written = GraspPose(**row["written"])
                alone = {"correct": score_pose(written, sample.positives, sample.image_size).correct}
                row["written_judged"] = alone | judge(dataset, image_id, referral, written, view)
            if refine and row["parsed"]:
                scene = dataset.scene(image_id)
                refined = with_scene(camera, scene) if scene is not None else camera
                refined = center_crop(refined, view.crop, (view.size, view.size))
                objects = scene.objects if scene is not None else None
                row["refinement"] = refine_turn(
                    answer_fn.follow_up,
                    fmt,
                    refined,
                    objects,
                    row,
                    referral.id if referral else image_id,
                    refine_kinds,
                    lambda: getattr(answer_fn, "follow_up_written", None),
                )
            result.rows.append(row)
            if vis is not None:
                _draw(vis, sample, row)
            bar.update()
    bar.close()
    result.seconds = time.monotonic() - start
    return result


def _request(dataset: GraspDataset, image_id: str, referral, view: ModelView, templates):
    """What one request shows and asks: the camera sample, the model's view of it, the category meant (None when
    absent or unknown) and the instruction."""
    camera = dataset.load(image_id, with_depth=False)
    sample = center_crop(camera, view.crop, (view.size, view.size))
    category = sample.category if sample.category in templates.categories else None
    if referral is not None and referral.target is not None and dataset.scene(image_id) is not None:
        category = dataset.scene(image_id).objects[referral.target]["category"]  # the object meant
    elif referral is not None and referral.target is None:
        category = None  # absent: nothing to name
    if referral is not None:
        instruction = referral.text
    else:
        instruction = f"pick up the {category}" if category else "Predict a grasp pose for the object in the image."
    return camera, sample, category, instruction


def refine_turn(
    follow_up,
    fmt,
    sample,
    scene_objects,
    row: dict,
    request_id: str,
    kinds: tuple[str, ...] | None = None,
    written=None,
) -> dict | None:
    """One refinement turn on an answered request: a follow-up the picture allows after the model's pose (of
    the object the model grasped; drawn with a seed from the request's id, each feasible kind equally likely),
    the model's new pose, whether it does what was asked (``reasoning.refine.satisfies``) and is a correct
    grasp of the object meant, and the same two checks for the baselines on the same request: ``repeat`` (the
    first pose again) and ``rule`` (turned by exactly 90°, moved by 0.1; nothing for part and object).
    ``kinds``: only follow-ups of these kinds (all by default). ``written()``, after the follow-up: the model's own
    pose where a bundle's check moved it, judged too (``written_judged``). None when no request fits."""
    import math
    import random

    from appliance.grasp import wrap_angle

    from .build_dataset import unique_names
    from .reasoning.refine import KINDS, SHIFT, SIDES, SceneGrasps, draw_refinement, satisfies

    owners = sample.labels.owners or (0,) * len(sample.positives)
    parts = tuple(p or None for p in sample.labels.parts) if sample.labels.parts else ()
    names = unique_names(scene_objects) if scene_objects else None
    scene = SceneGrasps(sample.positives, sample.image_size, parts, owners, names)
    before = GraspPose(row["x"], row["y"], row["theta"])
    owner = scene.owners[scene.nearest(before)]
    rng = random.Random(f"refine:{request_id}")
    drawn = draw_refinement(rng, before, owner, scene, kinds or KINDS)
    if drawn is None:
        return None
    request, _ = drawn
    meant = request.object if request.kind == "object" else owner
    category = load_templates().category(scene_objects[owner]["category"] if scene_objects else row.get("category"))
    words = {k: v for k, v in request.to_json().items() if k in ("part", "side", "name")}
    text, _ = load_templates().refinement_for(request.kind, category, rng, **words)

    def check(after: GraspPose | None) -> dict:
        if after is None:
            return {"satisfied": False, "correct": False}
        near = scene.nearest(after)
        return {
            "satisfied": satisfies(request, before, after, scene.parts[near], scene.owners[near]),
            "correct": scene.valid(after, meant),
        }

    rule = None
    if request.kind == "rotate":
        rule = GraspPose(before.x, before.y, wrap_angle(before.theta + math.pi / 2))
    elif request.kind == "side":
        dx, dy = SIDES[request.side]
        rule = GraspPose(before.x + SHIFT * dx, before.y + SHIFT * dy, before.theta)
    baselines = {"repeat": check(before), "rule": check(rule) if rule is not None else None}
    reply = follow_up(text)
    out = {**request.to_json(), "request": text, "answer": reply, "parsed": False, "satisfied": False,
           "correct": False, "baselines": baselines}  # fmt: skip
    try:
        after = fmt.parse(reply).pose
    except (AnswerParseError, AnswerRefused) as exc:
        return {**out, "error": getattr(exc, "reason", str(exc))}
    own = written() if written is not None else None
    if own is not None:
        out["written"] = {"x": own.x, "y": own.y, "theta": own.theta}
        out["written_judged"] = check(own)
    return {**out, "parsed": True, "x": after.x, "y": after.y, "theta": after.theta, **check(after)}


class TorchAnswerer:
    """``evaluate``'s answer function for a torch checkpoint; ``follow_up`` continues the last conversation."""

    def __init__(self, model, processor, view: ModelView = ModelView()):
        self.model, self.processor, self.view = model.eval(), processor, view
        self._turns: list[dict] = []
        self._image = None

    def __call__(self, camera_image, view_image, instruction):
        prompt = self.view.prompt(instruction)
        text, tokens = answer(self.model, self.processor, view_image, instruction, prompt=prompt)
        self._image = view_image
        self._turns = [{"from": "human", "value": self.view.first_turn(instruction)}, {"from": "gpt", "value": text}]
        return text, tokens, self._hinted(instruction)

    def _hinted(self, instruction: str) -> dict:
        hints = self.view.hints
        return {} if hints is None else {"hint": hints.objects_for(instruction)}

    def many(self, requests: list[tuple]) -> list[tuple[str, int, dict]]:
        """Several first turns at once (``answer_many``), each ``(camera_image, view_image, instruction)``; no
        conversation is kept to follow up."""
        prompts = [self.view.prompt(instruction) for *_, instruction in requests]
        answers = answer_many(self.model, self.processor, [image for _, image, _ in requests], prompts)
        self._turns, self._image = [], None
        return [
            (text, tokens, self._hinted(instruction))
            for (text, tokens), (*_, instruction) in zip(answers, requests, strict=True)
        ]

    def follow_up(self, instruction: str) -> str:
        from .data import conversation_text

        self._turns.append({"from": "human", "value": instruction})
        prompt, _ = conversation_text(self._turns)
        text, _ = answer(self.model, self.processor, self._image, instruction, prompt=prompt)
        self._turns.append({"from": "gpt", "value": text})
        return text


def torch_answerer(model, processor, view: ModelView = ModelView()) -> TorchAnswerer:
    """Answers as ``view`` says the model was trained (its prompt order)."""
    return TorchAnswerer(model, processor, view)


class BundleAnswerer:
    """``evaluate``'s answer function for a bundle (appliance.runtime.model.GraspModel): the appliance's own path.

    ``constrain=False`` and ``max_new_tokens=MAX_NEW_TOKENS`` decode exactly as the torch path does (a bundle with a
    presence section still refuses what its check does not see, without decoding)."""

    def __init__(self, grasp_model, constrain: bool = True, max_new_tokens: int | None = None):
        self.model, self.constrain, self.max_new_tokens = grasp_model, constrain, max_new_tokens or MAX_NEW_TOKENS
        self._session = None
        self.follow_up_written: GraspPose | None = None
        """The model's own pose of the last follow-up where a check moved it (None where none did)."""

    def __call__(self, camera_image, view_image, instruction):
        self._session = self.model.session()
        prediction = self._session.ask(instruction, camera_image, self.max_new_tokens, self.constrain)
        extra = {"timings": prediction.timings.as_dict()}
        if self.model.hints is not None:
            extra["hint"] = list(prediction.hint)
        if prediction.gated:
            extra["gated"] = True  # refused by the bundle's presence check, nothing decoded
        if self.model.target is not None:  # the bundle's target check: the model's own pose where it moved it
            written = prediction.written
            extra["written"] = None if written is None else {"x": written.x, "y": written.y, "theta": written.theta}
        return prediction.text, len(prediction.tokens), extra

    def follow_up(self, instruction: str) -> str:
        prediction = self._session.ask(instruction, max_new_tokens=self.max_new_tokens, constrain=self.constrain)
        self.follow_up_written = prediction.written
        return prediction.text


def bundle_answerer(grasp_model, constrain: bool = True, max_new_tokens: int | None = None) -> BundleAnswerer:
    return BundleAnswerer(grasp_model, constrain, max_new_tokens)


def bundle_view(manifest) -> ModelView:
    """The ModelView a bundle was exported with, for scoring: answer contract, size, crop, prompt order (its manifest
    carries the same facts as view.json). It leaves out the hints' knowledge: the bundle's own runtime hints its
    prompts (``BundleAnswerer``), so this view's ``prompt`` is not the bundle's for a model trained with hints."""
    answer, template = manifest.answer, manifest.prompt_template
    order = "instruction" if template.index("{instruction}") < template.index(manifest.image_token) else "image"
    return ModelView(answer.variant, answer.decimals, manifest.image.size, manifest.image.crop, answer.refusals, order)


def answer(model, processor, image, instruction: str, prompt: str | None = None) -> tuple[str, int]:
    """Greedy answer to one prompt (default: the single-turn prompt of ``instruction``): text and token count."""
    return answer_many(model, processor, [image], [prompt or PROMPT_TEMPLATE.format(instruction=instruction)])[0]


ANSWER_BATCH = 16
"""Prompts ``answer_many`` decodes together. On this CPU a batch gave 5.7× the answers a second of one at a time
(64 RT requests, bench/batched_answers.py). tests/training/test_batched_answers.py checks they are the same answers
in float32; under a GPU's bfloat16 rounding a near-tie may differ (not measured)."""


def answer_many(model, processor, images: list, prompts: list[str]) -> list[tuple[str, int]]:
    """Greedy answers to several prompts, each with its image, ``ANSWER_BATCH`` at a time: texts and token counts,
    in order.

    The prompts of a batch are padded on the left, so every answer starts right after its own prompt; the attention
    mask keeps the padding out of reach, and the positions count from each prompt's first real token."""
    import torch

    stops = model.generation_config.eos_token_id
    stops = [] if stops is None else stops if isinstance(stops, list) else [stops]
    stops = torch.tensor(stops, dtype=torch.long, device=model.device)
    answers = []
    for first in range(0, len(prompts), ANSWER_BATCH):
        batch = slice(first, first + ANSWER_BATCH)
        inputs = processor(
            images=images[batch], text=prompts[batch], return_tensors="pt", padding=True, padding_side="left"
        )
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        for row in output[:, inputs["input_ids"].shape[1] :]:
            ended = torch.isin(row, stops).nonzero()
            new = row[: int(ended[0]) + 1] if len(ended) else row  # what one prompt alone would have generated
            answers.append((processor.tokenizer.decode(new, skip_special_tokens=True).strip(), int(len(new))))
    return answers


def record_accuracy(model, processor, fmt, records: list[dict], root: Path) -> float:
    """Rectangle-metric accuracy on build_dataset test records (their images and all their grasps)."""
    from PIL import Image

    from .data import conversation_text

    images = []
    for record in records:
        with Image.open(root / record["image"]) as img:
            images.append(img.convert("RGB"))
    prompts = [conversation_text(r["conversations"][:1])[0] for r in records]  # each record's own first turn
    correct = 0
    for record, image, (text, _) in zip(records, images, answer_many(model, processor, images, prompts)):
        truths = [
            GraspPose(x, y, t).to_rectangle(image.size, length, width) for x, y, t, length, width in record["grasps"]
        ]
        try:
            correct += bool(truths) and score_pose(fmt.parse(text).pose, truths, image.size).correct
        except AnswerRefused:
            correct += bool(record.get("absent"))  # a refusal is right only where the object is absent
        except AnswerParseError:
            pass
    return correct / len(records) if records else 0.0


def _draw(vis: Path, sample, row: dict) -> None:
    from appliance.grasp import GraspPose

    vis.mkdir(parents=True, exist_ok=True)
    canvas = draw_grasps(sample.image, sample.positives, GREEN)
    if row["parsed"]:
        truth = sample.positives[0] if sample.positives else None
        size = (truth.length, truth.width) if truth else (20.0, 8.0)
        canvas = draw_grasps(
            canvas, [GraspPose(row["x"], row["y"], row["theta"]).to_rectangle(sample.image_size, *size)], RED
        )
    canvas.save(vis / f"{row['image']}.png")
    (vis / f"{row['image']}.txt").write_text(row["answer"] + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Evaluate a LLaVA grasp model with the rectangle metric (greedy answers, parsed as trained).",
        epilog="examples:\n  python -m training.evaluate --model runs/rt-merged --root data/synth --split iw --fold 0 --json runs/eval.json\n"
        "  python -m training.evaluate --bundle bundles/rt-q4 --root data/synth --split iw --fold 0",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="merged (or pretrain) checkpoint with view.json")
    source.add_argument(
        "--bundle", type=Path, help="a bundle from python -m export.quantize (runs as the appliance does)"
    )
    parser.add_argument("--root", type=Path, required=True, help="dataset root")
    parser.add_argument(
        "--split", choices=["iw", "ow", "cw", "all"], default="iw", help="which test images: a fold's, or all"
    )
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="the split seed the dataset was built with")
    parser.add_argument("--limit", type=int, help="only the first N test images")
    parser.add_argument("--json", type=Path, help="write the summary and every answer here")
    parser.add_argument("--vis", type=Path, help="write PNGs (prediction red, ground truth green) and answers here")
    parser.add_argument(
        "--refine",
        action="store_true",
        help="also ask one refinement per image (rotate, move to a side, "
        "another part) and report how often the new pose does what was asked and is a correct grasp",
    )
    parser.add_argument(
        "--refine-kinds",
        type=lambda text: tuple(k.strip() for k in text.split(",")),
        help="with --refine: only follow-ups of these kinds, comma-separated (side, rotate, part, object); a "
        "request none of them fits gets none. The default draws every kind the picture allows",
    )
    parser.add_argument(
        "--heads", action="store_true", help="score a vision-stage checkpoint's grasp heads (the CNN-style baseline)"
    )
    parser.add_argument(
        "--cnn",
        type=Path,
        help="a vision-stage checkpoint, or a bundle exported with the target check (its graph carries those heads), "
        "whose grasp heads join the baselines: instruction-blind, told the instruction's words, told the category "
        "(floor and oracle are always reported)",
    )
    parser.add_argument("--size", type=int, default=224, help="with --heads: the input size (no view.json needed)")
    parser.add_argument("--crop", type=int, help="with --heads: the square crop the vision stage used")
    args = parser.parse_args(argv)
    if args.heads and args.bundle:
        parser.error("--heads scores a vision checkpoint (--model), not a bundle")
    if args.refine_kinds is not None:
        from .reasoning.refine import KINDS

        if not args.refine:
            parser.error("--refine-kinds needs --refine")
        unknown = [k for k in args.refine_kinds if k not in KINDS]
        if unknown or not args.refine_kinds:
            parser.error(f"--refine-kinds: unknown kind {unknown[0] if unknown else ''!r} (known: {', '.join(KINDS)})")
    try:
        from .model import load_llava

        dataset = open_dataset(args.root)
        dataset, ids = held_out(dataset, args.split, args.fold, seed=args.seed)
        ids = ids[: args.limit]
        if args.bundle:
            from appliance.runtime.model import GraspModel

            grasp_model = GraspModel.load(args.bundle)
            result = evaluate(
                bundle_answerer(grasp_model),
                bundle_view(grasp_model.manifest),
                dataset,
                ids,
                args.vis,
                sys.stderr.isatty(),
                refine=args.refine,
                refine_kinds=args.refine_kinds,
            )
            return _report(result, args.json, baselines(dataset, ids, args.cnn, grasp_model.manifest.image.crop))
        model, processor = load_llava(args.model)
        if args.heads:
            from .stages import heads_predictor

            result = evaluate_heads(
                heads_predictor(args.model, model, processor), ModelView(size=args.size, crop=args.crop), dataset, ids
            )
        else:
            import torch

            view = ModelView.load(args.model)
            if torch.cuda.is_available():  # a GPU machine answers there (the fold check of scripts/device_build)
                model.to("cuda")
            result = evaluate(
                torch_answerer(model, processor, view),
                view,
                dataset,
                ids,
                args.vis,
                progress=sys.stderr.isatty(),
                refine=args.refine,
                refine_kinds=args.refine_kinds,
            )
        crop = args.crop if args.heads else view.crop
        rows = baselines(dataset, ids, args.cnn, crop)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _report(result, args.json, rows)


def _report(result: Evaluation, json_path: Path | None, baseline_rows: dict | None = None) -> int:
    summary = result.summary()
    if baseline_rows is not None:
        summary["baselines"] = baseline_rows
    print(json.dumps(summary, indent=1))
    if json_path:
        json_path.write_text(json.dumps({**summary, "answers": result.rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
