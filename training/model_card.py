"""Write a bundle's README.md and metrics.json from the run that built it (``scripts/build_demo_model``).

    python -m training.model_card --work runs/demo-model --out models/rtgrasp-tiny

Everything it states is read from the run: each stage's command and wall time from
``pipeline.log``, the accuracies from the ``eval-*.json`` files ``training.evaluate`` wrote.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path

SETS = {
    "single": "single objects (the training objects in new poses)",
    "clutter": "2–5 objects, test phrasings",
    "new-objects": "2–5 new objects (instances no training image showed), test phrasings",
}
SUMMARY_KEYS = (
    "accuracy",
    "part_accuracy",
    "target_rate",
    "n",
    "parse_failure_rate",
    "mean_answer_tokens",
    "ms_per_image",
    "answer_batch",
    "category_accuracy",
    "category_by_kind",
    "hint_by_kind",
    "refused_absent",
    "refused_present",
    "refinement_success",
    "refinement_satisfied",
    "refinement_correct",
    "refinement_by_kind",
    "by_kind",
    "baselines",
    "target_check",
)
GOALS = (  # (what, test set, how to read it from a summary, goal, at least)
    ("rectangle-metric accuracy", "single", lambda m: m.get("accuracy"), 0.85, True),
    ("part-metric accuracy", "single", lambda m: m.get("part_accuracy"), 0.80, True),
    ("part-metric accuracy", "clutter", lambda m: m.get("part_accuracy"), 0.75, True),
    ("target rate", "clutter", lambda m: m.get("target_rate"), 0.90, True),
    ("lead over the CNN heads in target rate", "clutter", lambda m: _lead(m), 0.30, True),
    ("category named right, function instructions", "clutter", lambda m: _named(m, "function"), 0.90, True),
    ("category named right, attribute instructions", "clutter", lambda m: _named(m, "attribute"), 0.90, True),
    ("absent instructions refused", "clutter", lambda m: m.get("refused_absent"), 0.95, True),
    ("refusals of present objects", "clutter", lambda m: m.get("refused_present"), 0.02, False),
)
REFINE_KINDS = ("side", "rotate", "part", "object")
BASELINE_LABELS = {
    "cnn": "cnn (instruction-blind)",
    "cnn-words": "cnn told what the instruction's words name (a rule)",
    "cnn-told": "cnn told the category (an upper bound, not a baseline)",
}
"""The baselines' rows in the card (``training.judging.baselines``), in this order after the floor."""


def _lead(m: dict):
    cnn = (m.get("baselines") or {}).get("cnn") or {}
    if m.get("target_rate") is None or cnn.get("target_rate") is None:
        return None
    return m["target_rate"] - cnn["target_rate"]


def _named(m: dict, kind: str):
    return (m.get("category_by_kind") or {}).get(kind)


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


def read_machines(log: Path) -> dict[str, str]:
    """The machine each stage of ``read_stages`` last ran on (``== machine:`` lines; older logs have none)."""
    machines, current = {}, None
    for line in log.read_text().splitlines():
        if line.startswith("== machine: "):
            current = line.removeprefix("== machine: ")
        elif current and (m := re.match(r"== ([\w-]+) took \d+ s$", line)):
            machines[m.group(1)] = current
    return machines


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


def spread(values: list) -> str:
    """One build's figure, or two builds' as 'a / b'."""
    return " / ".join(percent(v) for v in values)


def card(
    stages: list[tuple[str, str, int]],
    metrics: dict,
    bundle_mb: float,
    work: str = "runs/demo-model",
    also=None,
    machines: dict[str, str] | None = None,
    recipe: dict | None = None,
) -> str:
    """The model card; ``also`` is a second build's metrics (another seed), shown beside as 'a / b'; ``machines``
    (``read_machines``) say where each stage ran when the build was split over several; ``recipe`` (the work
    folder's ``recipe.json``) the pipeline and ``--set`` values that built it."""
    total = sum(s for _, _, s in stages)
    machines = machines or {}
    split = len(set(machines.values())) > 1
    where = "on the machine that built it"
    if split:
        minutes: dict[str, float] = {}
        for name, _, seconds in stages:
            ran_on = machines.get(name, "unrecorded")
            minutes[ran_on] = minutes.get(ran_on, 0) + seconds / 60
        where = "(" + "; ".join(f"{m:.1f} min on {machine}" for machine, m in minutes.items()) + ")"
    builds = [metrics] + ([also] if also else [])
    q4 = [b.get("q4", {}) for b in builds]
    tune = next((command for name, command, _ in stages if name == "tune"), "")
    tuned = "the whole decoder tuned" if "--strategy decoder" in tune else "LoRA"
    rebuild = (
        [
            "scripts/device_build prepare && scripts/device_build begin   # here: wheels; the first stages",
            "bash scripts/device_build train --budget 540   # on a GPU machine (device tool, carry .device)",
            "scripts/device_build finish FILES_AT   # here: the fold, the Q4 bundle, test sets, evaluations, this folder",
        ]
        if split
        else [
            f"python -m training.pipeline {recipe['pipeline']} --work {work}"
            + "".join(f" --set {shlex.quote(item)}" for item in recipe["set"])
            + "   # writes that folder, then replaces this one"
        ]
        if recipe
        else [f"scripts/build_demo_model {work}   # writes {work}/ (default runs/demo-model) and replaces this folder"]
    )
    lines = [
        "# rtgrasp-tiny: the bundled demo model",
        "",
        f"A Q4_K_M bundle of a 6 M-parameter LLaVA built from scratch and reasoning-tuned (RT) with {tuned} on",
        "synthetic scenes of one to five objects in the simulated cell, with referring instructions (name, colour",
        "or size, place, use) and follow-ups. Rebuild it from nothing with",
        "",
        "```bash",
        *rebuild,
        "```",
        "",
        f"Bundle size: {bundle_mb:.1f} MB. Whole build: {total / 60:.1f} min of stage time {where}.",
        "Seeds: training scenes `training.synth --seed 0 --objects 1-5`; test sets `--seed 0 --scene-seed N`",
        "(the training objects in new scenes) or `--seed N` (new objects: a library of their own) with",
        "`--phrasing test` (no instruction phrasing training saw).",
        "Rectangle metric: within 30° and IoU > 0.25 of a label of the object meant. Part metric: the centre on an",
        "allowed region of that object, no finger on a forbidden part or a neighbour (docs/datasets.md).",
        *(["Two builds: figures read 'this build / the other build' (another training seed)."] if also else []),
        "",
        "## Goals (Q4 bundle, fresh test scenes)",
        "",
        "| measure | test set | figure | goal | met |",
        "|---|---|---|---|---|",
    ]
    for what, test_set, read, goal, at_least in GOALS:
        values = [read(m.get(test_set, {})) for m in q4]
        met = values[0] is not None and (values[0] >= goal if at_least else values[0] <= goal)
        lines.append(f"| {what} | {test_set} | {spread(values)} | {'≥' if at_least else '≤'} {percent(goal)} | "
                     f"{'yes' if met else 'no'} |")  # fmt: skip
    hinted = (q4[0].get("clutter") or {}).get("hint_by_kind") or {}
    if hinted:
        named = (q4[0].get("clutter") or {}).get("category_by_kind") or {}
        lines += [
            "",
            "## Hints (clutter; `knowledge.yaml`: the objects an instruction's words are for, appended to it)",
            "",
            "| kind | got a hint | the hint named the object meant | the model named it |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {kind} | {percent(row.get('hinted'))} | {percent(row.get('right'))} | {percent(named.get(kind))} |"
            for kind, row in sorted(hinted.items())
        ]
    lines += [
        "",
        "## Accuracy beside the baselines (same requests)",
        "",
        "| test set | who | rectangle | part | target rate |",
        "|---|---|---|---|---|",
    ]
    for name, what in SETS.items():
        sets = [m.get(name, {}) for m in q4]
        if not sets[0]:  # a build made before the set was
            continue
        torch = metrics.get("torch", {}).get(name, {})
        n = sets[0].get("n", "–")
        lines.append(f"| {what}, {n} requests | **model (Q4)** | {spread([m.get('accuracy') for m in sets])} | "
                     f"{spread([m.get('part_accuracy') for m in sets])} | {spread([m.get('target_rate') for m in sets])} |")  # fmt: skip
        if torch:
            lines.append(f"| | model (torch fp32) | {percent(torch.get('accuracy'))} | {percent(torch.get('part_accuracy'))} | "
                         f"{percent(torch.get('target_rate'))} |")  # fmt: skip
        checked = [m.get("target_check") or {} for m in sets]
        if any(checked):  # the bundle moved poses: the model's own beside them, and how many it moved
            alone = [c.get("model_alone") or {} for c in checked]
            lines.append(f"| | model (Q4) as it wrote its poses (the target check moved {spread([c.get('moved') for c in checked])} of the parsed answers) | "
                         f"{spread([a.get('accuracy') for a in alone])} | {spread([a.get('part_accuracy') for a in alone])} | "
                         f"{spread([a.get('target_rate') for a in alone])} |")  # fmt: skip
        for who in ("floor", "cnn", "cnn-words", "cnn-told", "oracle"):
            row = (sets[0].get("baselines") or {}).get(who)
            if row and "error" not in row:
                label = BASELINE_LABELS.get(who, who)
                lines.append(f"| | {label} | {percent(row.get('accuracy'))} | {percent(row.get('part_accuracy'))} | "
                             f"{percent(row.get('target_rate'))} |")  # fmt: skip
    lines += [
        "",
        "## Refinement (one follow-up per answered request; success = did what was asked and is a valid grasp)",
        "",
        "| test set | kind | requests | model (Q4) | its own poses, before the checks | repeat the first pose | "
        "rule (90°, 0.1 shift) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in SETS:
        per_kind = [(m.get(name, {}).get("refinement_by_kind") or {}) for m in q4]
        for kind in REFINE_KINDS:
            row = per_kind[0].get(kind)
            if row:
                lines.append(f"| {name} | {kind} | {row['n']} | {spread([(k.get(kind) or {}).get('success') for k in per_kind])} | "
                             f"{percent(row.get('model_alone'))} | {percent(row.get('repeat'))} | "
                             f"{percent(row.get('rule'))} |")  # fmt: skip
    lines += [
        "",
        "## How it was built (each stage's command and wall time)",
        "",
        "| stage | seconds | command |" + (" machine |" if split else ""),
        "|---|---|---|" + ("---|" if split else ""),
    ]
    lines += [
        f"| {name} | {seconds} | `{command}` |" + (f" {machines.get(name, '–')} |" if split else "")
        for name, command, seconds in stages
    ]
    lines += ["", "`metrics.json` holds the same figures as read from the evaluation files.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.model_card", description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="the build's work folder (pipeline.log, eval-*.json)")
    parser.add_argument(
        "--out", type=Path, required=True, help="the bundle folder to write README.md and metrics.json into"
    )
    parser.add_argument("--also", type=Path, help="a second build's work folder (another seed): its figures beside")
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
    also = read_metrics(args.also) if args.also else None
    machines = read_machines(log)
    from .pipeline import RECIPE_FILE

    recipe_path = args.work / RECIPE_FILE
    recipe = json.loads(recipe_path.read_text()) if recipe_path.is_file() else None
    (args.out / "README.md").write_text(card(stages, metrics, bundle_mb, str(args.work), also, machines, recipe))
    (args.out / "metrics.json").write_text(
        json.dumps(
            {
                "stages": [
                    {"name": n, "command": c, "seconds": s, **({"machine": machines[n]} if n in machines else {})}
                    for n, c, s in stages
                ],
                "metrics": metrics,
                **({"other_build": also} if also else {}),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.out / 'README.md'} and metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
