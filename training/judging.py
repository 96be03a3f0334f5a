"""Judging a model's answers request by request: the rectangle and part-aware metrics, the target rate, figures
per instruction kind, and the baselines on the same requests (``training.evaluate`` reports them)."""

from __future__ import annotations

from pathlib import Path

from appliance.grasp import GraspPose

from .datasets import GraspDataset
from .datasets.referring import Instruction
from .metric import grade
from .view import ModelView


def scores(rows: list[dict]) -> dict:
    """The rectangle metric's ``accuracy``, the part-aware metric's ``part_accuracy`` and the ``target_rate``
    (each None where no row could be judged by it: a root without scene truth)."""

    def share(key: str) -> float | None:
        judged = [r[key] for r in rows if r.get(key) is not None]
        return sum(judged) / len(judged) if judged else None

    return {
        "accuracy": share("correct") or 0.0,
        "part_accuracy": share("part_correct"),
        "target_rate": share("on_target"),
    }


def by_kind(rows: list[dict]) -> dict:
    """``scores`` per instruction kind."""
    kinds = sorted({r["kind"] for r in rows if r.get("kind")})
    return {
        k: {**scores([r for r in rows if r.get("kind") == k]), "n": sum(r.get("kind") == k for r in rows)}
        for k in kinds
    }


def evaluation_items(dataset: GraspDataset, ids: list[str]) -> list[tuple[str, Instruction | None]]:
    """What to score: every instruction about the chosen images when the root has instructions, else each image."""
    if not dataset.instructions:
        return [(image_id, None) for image_id in ids]
    chosen = set(ids)
    return [(i.image, i) for i in dataset.instructions if i.image in chosen]


def to_camera(pose: GraspPose, view: ModelView, image_size) -> GraspPose:
    """A pose predicted on the model's view (the centred square crop) in the whole camera image."""
    w, h = image_size
    side = view.crop or min(w, h)
    return GraspPose((w / 2 - side / 2 + pose.x * side) / w, (h / 2 - side / 2 + pose.y * side) / h, pose.theta)


def judge(dataset: GraspDataset, image_id: str, instruction: Instruction | None, pose, view: ModelView) -> dict:
    """Row fields for a view pose (None: a refusal) under both metrics (``training.metric.grade``)."""
    camera = to_camera(pose, view, dataset.labels(image_id).image_size) if pose is not None else None
    try:
        g = grade(dataset, image_id, camera, instruction)
    except ValueError:  # a cluttered image without instruction: no single target
        return {}
    out = {"part_correct": g.part, "on_target": g.on_target}
    if instruction is not None:
        out.update(correct=g.rectangle, instruction=instruction.id, kind=instruction.kind, target=instruction.target)
    return out


def unparsed(dataset: GraspDataset, image_id: str, referral: Instruction | None) -> dict:
    """Row fields for an answer that did not parse: wrong under every metric that can judge the image."""
    out = {}
    if referral is not None:
        out.update(instruction=referral.id, kind=referral.kind, target=referral.target, correct=False)
    if dataset.scene(image_id) is not None:
        out.update(part_correct=False, on_target=None if referral and referral.kind == "absent" else False)
    return out


def baselines(dataset: GraspDataset, ids: list[str], cnn: Path | None = None, crop: int | None = None) -> dict:
    """The baselines on the same requests: floor and oracle, and the CNN heads of ``cnn`` when given (with
    instructions, also those heads told the categories the instruction's words name, a rule a robot can run, and
    told the category meant: what the vision tokens carry).
    A baseline that cannot run on this root (the floor without depth) reports why instead."""
    from .baseline import BaselineOptions, baseline_summary, make_predictor, run_baseline

    items = evaluation_items(dataset, ids)
    out = {}
    for kind in ("floor", "cnn", "cnn-words", "cnn-told", "oracle"):
        if (kind.startswith("cnn") and cnn is None) or (kind in ("cnn-words", "cnn-told") and not dataset.instructions):
            continue  # words and told: only where instructions name an object
        try:
            predictor = make_predictor(kind, dataset, BaselineOptions(checkpoint=cnn, crop=crop))
            out[kind] = baseline_summary(dataset, run_baseline(predictor, dataset, items, desc=kind))
        except ValueError as exc:
            out[kind] = {"error": str(exc)}
    return out
