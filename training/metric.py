"""Score predicted grasp poses against a dataset with the rectangle metric.

One JSON object per line of the predictions file::

    {"image": "pcd0100", "x": 0.44, "y": 0.70, "theta": -0.07}

``image`` is the dataset's image id; x, y are normalised by that image's
width and height; theta is in radians (DESIGN.md, "Conventions").
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from appliance.grasp import GraspPose, GraspScore, score_pose
from training.progress import progress_bar

from .datasets import GraspDataset, open_dataset

REQUIRED_KEYS = ("image", "x", "y", "theta")


class PredictionFileError(ValueError):
    """A predictions file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Prediction:
    """One predicted pose for one image."""

    image: str
    pose: GraspPose


@dataclass(frozen=True)
class MetricReport:
    """Accuracy under the rectangle metric, with every image's score."""

    scores: dict[str, GraspScore]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def correct(self) -> int:
        return sum(s.correct for s in self.scores.values())

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def failures(self) -> dict[str, GraspScore]:
        return {image: s for image, s in self.scores.items() if not s.correct}

    def to_json(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "n": self.n,
            "correct": self.correct,
            "failures": [
                {
                    "image": image,
                    "best_iou": round(s.best_iou, 4),
                    "best_angle_error_deg": round(math.degrees(s.best_angle_error), 2),
                }
                for image, s in sorted(self.failures.items())
            ],
        }


def read_predictions(path: Path) -> list[Prediction]:
    """Parse a JSONL predictions file; any bad line raises naming file and line."""
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
        missing = [k for k in REQUIRED_KEYS if k not in record]
        if missing:
            raise PredictionFileError(f"{where}: missing {missing}")
        image = record["image"]
        if not isinstance(image, str) or not image:
            raise PredictionFileError(f"{where}: 'image' must be a non-empty string")
        values = [record[k] for k in ("x", "y", "theta")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise PredictionFileError(f"{where}: x, y and theta must be finite numbers, got {values}")
        if image in seen:
            raise PredictionFileError(f"{where}: image {image!r} already predicted on line {seen[image]}")
        seen[image] = number
        predictions.append(Prediction(image, GraspPose(*map(float, values))))
    return predictions


def score_predictions(dataset: GraspDataset, predictions: Iterable[Prediction], progress: bool = False) -> MetricReport:
    """Score every prediction against its image's positive rectangles."""
    predictions = list(predictions)
    missing = [p.image for p in predictions if p.image not in dataset]
    if missing:
        raise KeyError(
            f"{len(missing)} predicted image(s) not in the dataset at {dataset.root}: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    scores = {}
    for p in progress_bar(predictions, desc="scoring", unit="img", disable=not progress):
        labels = dataset.labels(p.image)
        scores[p.image] = score_pose(p.pose, labels.positives, labels.image_size)
    return MetricReport(scores)


def format_report(report: MetricReport, max_failures: int = 20) -> str:
    """Human-readable summary: accuracy, count, and the worst failures."""
    lines = [f"accuracy {report.accuracy:.2%}  ({report.correct} of {report.n} correct)"]
    failures = sorted(report.failures.items(), key=lambda item: item[1].best_iou)
    if failures:
        lines.append(f"{len(failures)} failures (IoU > 0.25 within 30° needed):")
        for image, s in failures[:max_failures]:
            lines.append(
                f"  {image:<24} best IoU {s.best_iou:.3f}  nearest angle {math.degrees(s.best_angle_error):5.1f}°"
            )
        if len(failures) > max_failures:
            lines.append(f"  ... and {len(failures) - max_failures} more (all in --json)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.metric",
        description="Score predicted grasp poses (JSONL) against a Cornell-format or Jacquard dataset "
        "with the rectangle metric (IoU > 0.25 and |Δθ| <= 30° against any ground truth).",
        epilog="example: python -m training.metric --predictions preds.jsonl --root data/cornell --json metrics.json",
    )
    parser.add_argument("--predictions", type=Path, required=True, help="JSONL file: image, x, y, theta per line")
    parser.add_argument("--root", type=Path, required=True, help="dataset root")
    parser.add_argument("--objects", type=Path, help="Cornell image→object mapping file (default: ROOT/objects.csv)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    try:
        dataset = open_dataset(args.root, args.objects)
        predictions = read_predictions(args.predictions)
        report = score_predictions(dataset, predictions, progress=sys.stderr.isatty())
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
