"""Write a bundle's README.md and metrics.json from the run that built it (``scripts/build_demo_model``).

    python -m training.model_card --work runs/demo-model --out models/rtgrasp-tiny

Everything it states is read from the run: each stage's command and wall time from
``pipeline.log``, the accuracies from the ``eval-*.json`` files ``training.evaluate`` wrote.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SETS = {"seen": "the training objects in new poses (image-wise)", "unseen": "objects never seen (object-wise)"}
SUMMARY_KEYS = (
    "accuracy",
    "n",
    "parse_failure_rate",
    "mean_answer_tokens",
    "ms_per_image",
    "category_accuracy",
    "refinement_success",
    "refinement_satisfied",
    "refinement_correct",
)


def read_stages(log: Path) -> list[tuple[str, str, int]]:
    """(name, command, seconds) of every stage the log shows finishing, in order (the last run's wins)."""
    commands: dict[str, str] = {}
    stages: dict[str, tuple[str, str, int]] = {}
    for line in log.read_text().splitlines():
        if m := re.match(r"== ([\w-]+): (\S.*)$", line):
            if not m.group(2).startswith("finished in an earlier run"):
                commands[m.group(1)] = m.group(2)
        elif (m := re.match(r"== ([\w-]+) took (\d+) s$", line)) and m.group(1) in commands:
            stages[m.group(1)] = (m.group(1), commands[m.group(1)], int(m.group(2)))
    return list(stages.values())


def read_metrics(work: Path) -> dict:
    """{'q4': {'seen': summary, 'unseen': ...}, 'torch': {...}} from the evaluations that exist."""
    metrics: dict = {}
    for path in sorted(work.glob("eval-*-*.json")):
        _, runtime, test_set = path.stem.split("-", 2)
        summary = json.loads(path.read_text())
        metrics.setdefault(runtime, {})[test_set] = {k: summary[k] for k in SUMMARY_KEYS if summary.get(k) is not None}
    return metrics


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def card(stages: list[tuple[str, str, int]], metrics: dict, bundle_mb: float, work: str = "runs/demo-model") -> str:
    total = sum(s for _, _, s in stages)
    lines = [
        "# rtgrasp-tiny: the bundled demo model",
        "",
        "A Q4_K_M bundle of a 6 M-parameter LLaVA built from scratch and reasoning-tuned (RT) with LoRA on",
        "synthetic images of the simulated cell. Rebuild it from nothing with",
        "",
        "```bash",
        f"scripts/build_demo_model {work}   # writes {work}/ (default runs/demo-model) and replaces this folder",
        "```",
        "",
        f"Bundle size: {bundle_mb:.1f} MB. Whole build: {total / 60:.1f} min of stage time on the machine that built it.",
        "Seeds: training images `training.synth --seed 0`; test sets `--seed 0 --scene-seed 1` (the training",
        "objects in new poses) and `--seed 1` (a new object library); every training stage `--seed 0`.",
        "Labels: every allowed grasp region of the synthetic images is labelled with a grasp centre every",
        "1 cm along it and all round a rim (`LABEL_SPACING` in `appliance/sim/objects.py`); a pose is right",
        "within 30° and IoU > 0.25 of any label.",
        "",
        "## Accuracy (rectangle metric, greedy answers)",
        "",
        "| test set | Q4 bundle | torch (merged, fp32) | parse failures (Q4) | category named right (Q4) | refinement success (Q4) |",
        "|---|---|---|---|---|---|",
    ]
    for name, what in SETS.items():
        q4, torch = metrics.get("q4", {}).get(name, {}), metrics.get("torch", {}).get(name, {})
        lines.append(
            f"| {what}, {q4.get('n', '–')} images | {percent(q4.get('accuracy'))} | {percent(torch.get('accuracy'))} | "
            f"{percent(q4.get('parse_failure_rate'))} | {percent(q4.get('category_accuracy'))} | "
            f"{percent(q4.get('refinement_success'))} |"
        )
    lines += [
        "",
        "## How it was built (each stage's command and wall time)",
        "",
        "| stage | seconds | command |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {seconds} | `{command}` |" for name, command, seconds in stages]
    lines += ["", "`metrics.json` holds the same figures as read from the evaluation files.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.model_card", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the build's work folder (pipeline.log, eval-*.json)")
    parser.add_argument(
        "--out", type=Path, required=True, help="the bundle folder to write README.md and metrics.json into"
    )
    args = parser.parse_args(argv)
    log = args.work / "pipeline.log"
    if not log.is_file():
        print(f"error: {log} does not exist (run scripts/build_demo_model first)", file=sys.stderr)
        return 2
    stages, metrics = read_stages(log), read_metrics(args.work)
    if not metrics:
        print(f"error: no eval-*-*.json in {args.work}", file=sys.stderr)
        return 2
    bundle_mb = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file()) / 1e6
    (args.out / "README.md").write_text(card(stages, metrics, bundle_mb, str(args.work)))
    (args.out / "metrics.json").write_text(
        json.dumps(
            {"stages": [{"name": n, "command": c, "seconds": s} for n, c, s in stages], "metrics": metrics}, indent=1
        )
        + "\n"
    )
    print(f"wrote {args.out / 'README.md'} and metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
