"""Score predicted grasp poses against a dataset with the rectangle metric or the part-aware metric.

One JSON object per line of the predictions file::

    {"image": "pcd0100", "x": 0.44, "y": 0.70, "theta": -0.07}
    {"image": "pcd0101", "instruction": "pcd0101-2", "x": 0.31, "y": 0.52, "theta": 1.2}
    {"image": "pcd0101", "instruction": "pcd0101-4", "refused": true}

``image`` is the dataset's image id; x, y are normalised by that image's
width and height; theta is in radians (DESIGN.md, "Conventions"). A line
naming an ``instruction`` is scored against that instruction's target; a
refusal is right only for an ``absent`` instruction. The part-aware metric is
in ``training.part_metric``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from appliance.grasp import GraspPose, score_pose
from training.progress import progress_bar

from .datasets import GraspDataset, open_dataset
from .datasets.referring import Instruction
from .part_metric import score_part

REQUIRED_KEYS = ("image", "x", "y", "theta")
METRICS = ("rectangle", "part")


class PredictionFileError(ValueError):
    """A predictions file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Prediction:
    """One predicted pose (None: the model refused) for one image, or for one instruction about it."""

    image: str
    pose: GraspPose | None
    instruction: str | None = None

    @property
    def key(self) -> str:
        return self.instruction or self.image


@dataclass(frozen=True)
class Grade:
    """One prediction judged by both metrics: ``part`` and ``on_target`` are None without scene truth."""

    key: str
    image: str
    kind: str | None
    category: str | None
    rectangle: bool
    part: bool | None
    on_target: bool | None
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MetricReport:
    """Accuracy under one metric, the share of centres on the target, per kind and per category."""

    metric: str
    grades: list[Grade]

    def _correct(self, grade: Grade) -> bool:
        return bool(grade.rectangle if self.metric == "rectangle" else grade.part)

    @property
    def n(self) -> int:
        return len(self.grades)

    @property
    def correct(self) -> int:
        return sum(self._correct(g) for g in self.grades)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def target_rate(self) -> float | None:
        """Share of predictions with a target whose centre lies on the target's mask (None: no scene truth)."""
        judged = [g.on_target for g in self.grades if g.on_target is not None]
        return sum(judged) / len(judged) if judged else None

    @property
    def failures(self) -> list[Grade]:
        return [g for g in self.grades if not self._correct(g)]

    def breakdown(self, field_name: str) -> dict[str, dict]:
        """Accuracy (and target rate) per value of a grade's field (``kind`` or ``category``)."""
        groups: dict[str, list[Grade]] = {}
        for g in self.grades:
            value = getattr(g, field_name)
            if value is not None:
                groups.setdefault(value, []).append(g)
        return {value: MetricReport(self.metric, gs).summary() for value, gs in sorted(groups.items())}

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "correct": self.correct, "target_rate": self.target_rate}

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            **self.summary(),
            "by_kind": self.breakdown("kind"),
            "by_category": self.breakdown("category"),
            "failures": [{"id": g.key, "image": g.image, **g.detail} for g in sorted(self.failures, key=_by_key)],
        }


def _by_key(g: Grade) -> str:
    return g.key


def read_predictions(path: Path) -> list[Prediction]:
    """Parse a JSONL predictions file; any bad line raises naming file and line.

    A line may name an ``instruction`` (of the root's instructions.jsonl) and may be a refusal
    (``"refused": true``, no pose)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise PredictionFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    predictions, seen = [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PredictionFileError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise PredictionFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
        prediction = _prediction(record, where)
        if prediction.key in seen:
            what = "instruction" if prediction.instruction else "image"
            raise PredictionFileError(
                f"{where}: {what} {prediction.key!r} already predicted on line {seen[prediction.key]}"
            )
        seen[prediction.key] = number
        predictions.append(prediction)
    return predictions


def _prediction(record: dict, where: str) -> Prediction:
    refused = record.get("refused", False)
    if not isinstance(refused, bool):
        raise PredictionFileError(f"{where}: 'refused' must be true or false")
    missing = [k for k in (("image",) if refused else REQUIRED_KEYS) if k not in record]
    if missing:
        raise PredictionFileError(f"{where}: missing {missing}")
    image, instruction = record["image"], record.get("instruction")
    if not isinstance(image, str) or not image:
        raise PredictionFileError(f"{where}: 'image' must be a non-empty string")
    if instruction is not None and (not isinstance(instruction, str) or not instruction):
        raise PredictionFileError(f"{where}: 'instruction' must be a non-empty string")
    if refused:
        return Prediction(image, None, instruction)
    values = [record[k] for k in ("x", "y", "theta")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise PredictionFileError(f"{where}: x, y and theta must be finite numbers, got {values}")
    return Prediction(image, GraspPose(*map(float, values)), instruction)


def grade(dataset: GraspDataset, image: str, pose: GraspPose | None, instruction: Instruction | None = None) -> Grade:
    """Judge one pose (None: a refusal) by both metrics, for an instruction or (no instruction) for the image.

    With an instruction the rectangle metric takes the target's rectangles only; a refusal is right
    only for an ``absent`` instruction, and a pose never is there. Without one, the image's every
    rectangle counts and the part metric needs a one-object scene."""
    labels = dataset.labels(image)
    scene = dataset.scene(image)
    if instruction is not None:
        if instruction.image != image:
            raise ValueError(f"instruction {instruction.id} is about {instruction.image}, not {image}")
        labels = dataset.instruction_labels(instruction)
        target, kind = instruction.target, instruction.kind
    else:
        if scene is not None and len(scene.objects) > 1:
            raise ValueError(f"{image} shows {len(scene.objects)} objects: predictions for it must name an instruction")
        target, kind = (0 if scene is not None else None), None
    key = instruction.id if instruction else image
    if kind == "absent" or pose is None:
        right = kind == "absent" and pose is None
        part = right if scene is not None and scene.has_regions else None
        return Grade(key, image, kind, labels.category, right, part, None, _refusal(pose))
    rect = score_pose(pose, labels.positives, labels.image_size)
    detail = {
        "best_iou": round(rect.best_iou, 4),
        "best_angle_error_deg": round(math.degrees(rect.best_angle_error), 2),
    }
    if scene is None or target is None:
        return Grade(key, image, kind, labels.category, rect.correct, None, None, detail)
    if not scene.has_regions:  # a real dataset's masks: the target rate, no part regions
        u, v = pose.pixel_center(labels.image_size)
        return Grade(key, image, kind, labels.category, rect.correct, None, scene.object_at(u, v) == target, detail)
    part = score_part(pose, scene, target, labels.image_size)
    detail["part"] = part.reason or "correct"
    return Grade(key, image, kind, labels.category, rect.correct, part.correct, part.on_target, detail)


def _refusal(pose: GraspPose | None) -> dict:
    return {"refused": pose is None}


def score_predictions(
    dataset: GraspDataset, predictions: Iterable[Prediction], metric: str = "rectangle", progress: bool = False
) -> MetricReport:
    """Score every prediction (see ``grade``) under ``metric`` (rectangle or part)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    predictions = list(predictions)
    missing = [p.image for p in predictions if p.image not in dataset]
    if missing:
        raise KeyError(
            f"{len(missing)} predicted image(s) not in the dataset at {dataset.root}: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    instructions = {i.id: i for i in dataset.instructions}
    unknown = [p.instruction for p in predictions if p.instruction and p.instruction not in instructions]
    if unknown:
        raise KeyError(f"{len(unknown)} instruction id(s) not in {dataset.root}/instructions.jsonl: {unknown[:5]}")
    grades = []
    for p in progress_bar(predictions, desc="scoring", unit="pred", disable=not progress):
        g = grade(dataset, p.image, p.pose, instructions.get(p.instruction) if p.instruction else None)
        if metric == "part" and g.part is None and g.kind != "absent":
            raise ValueError(
                f"{p.image} has no part regions (the synthetic pcdNNNNscene.json + mask.png): the part metric needs them"
            )
        grades.append(g)
    return MetricReport(metric, grades)


def format_report(report: MetricReport, max_failures: int = 20) -> str:
    """Human-readable summary: accuracy, count, target rate, per kind, and the first failures."""
    lines = [f"{report.metric} accuracy {report.accuracy:.2%}  ({report.correct} of {report.n} correct)"]
    if report.target_rate is not None:
        lines.append(f"target rate {report.target_rate:.2%}  (centre on the target's pixels)")
    for kind, row in report.breakdown("kind").items():
        lines.append(f"  {kind:<10} {row['accuracy']:7.2%}  of {row['n']}")
    failures = report.failures
    if failures:
        need = "IoU > 0.25 within 30°" if report.metric == "rectangle" else "on an allowed region, pads clear"
        lines.append(f"{len(failures)} failures ({need} needed):")
        for g in failures[:max_failures]:
            why = g.detail.get("part") if report.metric == "part" else None
            if why is None and "best_iou" in g.detail:
                why = f"best IoU {g.detail['best_iou']:.3f}  nearest angle {g.detail['best_angle_error_deg']:5.1f}°"
            lines.append(f"  {g.key:<24} {why or ('refused' if g.detail.get('refused') else 'not refused')}")
        if len(failures) > max_failures:
            lines.append(f"  ... and {len(failures) - max_failures} more (all in --json)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.metric",
        description="Score predicted grasp poses (JSONL) against a Cornell-format or Jacquard dataset "
        "with the rectangle metric (IoU > 0.25 and |Δθ| <= 30° against any ground truth rectangle, of the "
        "instruction's target when the line names an instruction) or the part-aware metric (centre within "
        "1 cm of an allowed region of the target, closing axis within 30° of an allowed direction, neither "
        "2×1 cm finger pad on a blade, lens, tip or another object; needs the synthetic scene files).",
        epilog="examples:\n  python -m training.metric --predictions preds.jsonl --root data/cornell --json metrics.json\n"
        "  python -m training.metric --predictions preds.jsonl --root data/clutter --metric part --json m.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="JSONL file: image, x, y, theta per line; optionally instruction (an id of the root's "
        "instructions.jsonl) and refused (true: no pose)",
    )
    parser.add_argument("--metric", choices=METRICS, default="rectangle", help="which metric (default rectangle)")
    parser.add_argument("--root", type=Path, required=True, help="dataset root")
    parser.add_argument("--objects", type=Path, help="Cornell image→object mapping file (default: ROOT/objects.csv)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    try:
        dataset = open_dataset(args.root, args.objects)
        predictions = read_predictions(args.predictions)
        report = score_predictions(dataset, predictions, args.metric, progress=sys.stderr.isatty())
    except (OSError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
