"""Table I of the paper at small scale: RT vs NR-A vs NR-B, projector-only vs LoRA, k-fold image- and object-wise.

    python bench/paper_tables.py --base runs/demo-model/ground/checkpoint-001000 --root runs/table1-data \\
        --out bench/results/table1 --steps 150 --limit 40

For every split (iw, ow), fold, answer variant and strategy it runs the user's own commands:
``training.build_dataset`` (that fold's training images, that variant's answers), ``training.train``
from ``--base`` for ``--steps`` steps, ``training.merge`` for LoRA, and ``training.evaluate`` on the
fold's held-out images. Every cell is mean ± std over the folds. Runs are cached under ``--out`` (an
evaluation that exists is not redone: the stages go through ``training.pipeline``'s runner, which keeps each
stage's whole log under ``--out/logs/``), so an interrupted table resumes where it stopped. The table
(Markdown) and every number behind it (JSON) are written to ``--out``, with the budget they had.

All rows start from the same base and get the same budget; the only differences are the answer form
and what trains.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.pipeline import Runner, Stage  # noqa: E402  (after the path: the bench runs as a script too)

VARIANTS = ("rt", "nr-a", "nr-b")
STRATEGIES = ("pretrain", "lora")
STRATEGY_NAMES = {"pretrain": "projector only", "lora": "LoRA + projector"}


def cell_stages(args, split: str, fold: int, variant: str, strategy: str) -> tuple[list[Stage], Path]:
    """One (split, fold, variant, strategy) as pipeline stages — build, train, merge, evaluate — and its result file."""
    name = f"{split}{fold}-{variant}-{strategy}"
    data = args.out / "data" / f"{split}{fold}-{variant}"
    build = ["--root", str(args.root), "--variant", variant, "--split", split, "--fold", str(fold), "--out", str(data),
             "--size", str(args.size), "--decimals", str(args.decimals), "--augment", str(args.augment),
             "--targets", "one", "--seed", str(args.seed), *(["--crop", str(args.crop)] if args.crop else [])]  # fmt: skip
    run = args.out / "runs" / name
    lr = args.lr_pretrain if strategy == "pretrain" else args.lr_lora
    train = ["--strategy", strategy, "--model", str(args.base), "--data", str(data), "--out", str(run),
             "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--micro-batch", str(args.micro_batch),
             "--lr", str(lr), "--save-every", str(args.steps), "--seed", str(args.seed)]  # fmt: skip
    checkpoint = run / f"checkpoint-{args.steps:06d}"
    stages = [
        Stage(
            f"data-{split}{fold}-{variant}", "training.build_dataset", tuple(build), (str(data / "train.json"),), True
        ),
        Stage(f"train-{name}", "training.train", tuple(train), (str(checkpoint),), True),
    ]
    if strategy == "lora":
        merged = run / "merged"
        stages.append(
            Stage(
                f"merge-{name}",
                "training.merge",
                ("--adapter", str(checkpoint), "--out", str(merged)),
                (str(merged),),
                True,
            )
        )
        checkpoint = merged
    result = args.out / "eval" / f"{name}.json"
    evaluate = ["--model", str(checkpoint), "--root", str(args.root), "--split", split, "--fold", str(fold),
                "--seed", str(args.seed), "--json", str(result), *(["--limit", str(args.limit)] if args.limit else [])]  # fmt: skip
    stages.append(Stage(f"eval-{name}", "training.evaluate", tuple(evaluate), (str(result),), True))
    return stages, result


def run_cell(args, split: str, fold: int, variant: str, strategy: str, runner: Runner) -> dict:
    """One cell through the pipeline runner (its stages skipped when an earlier run finished them); its summary."""
    stages, result = cell_stages(args, split, fold, variant, strategy)
    (args.out / "eval").mkdir(parents=True, exist_ok=True)
    runner.run(stages)
    return json.loads(result.read_text())


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(results: dict, args) -> str:
    """The Markdown table: rows variant × strategy, columns the splits (mean ± std over folds, in %)."""
    head = "| answer | tuning | " + " | ".join(f"{'image' if s == 'iw' else 'object'}-wise" for s in args.splits) + " |"
    lines = [head, "|---|---|" + "---|" * len(args.splits)]
    for variant in args.variants:
        for strategy in args.strategies:
            cells = []
            for split in args.splits:
                accs = [results[f"{split}{k}-{variant}-{strategy}"]["accuracy"] for k in args.folds]
                m, s = mean_std(accs)
                cells.append(f"{100 * m:.1f} ± {100 * s:.1f}")
            lines.append(f"| {variant.upper()} | {STRATEGY_NAMES[strategy]} | " + " | ".join(cells) + " |")
    budget = (
        f"Budget per cell: {args.steps} steps × batch {args.batch_size} from `{args.base}` "
        f"(lr {args.lr_pretrain} projector-only, {args.lr_lora} LoRA), {len(args.folds)} folds, "
        f"{args.limit or 'all'} held-out images scored per fold, dataset `{args.root}`."
    )
    return "\n".join(lines) + "\n\n" + budget + "\n"


def parse_list(text: str, allowed=None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if allowed and t not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(allowed or ['values'])}, got {text!r}"
        )
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python bench/paper_tables.py",
        description=__doc__.splitlines()[0],
        epilog="example: python bench/paper_tables.py --base CKPT --root DATA --out bench/results/table1",
    )
    parser.add_argument(
        "--base", type=Path, required=True, help="the checkpoint every row starts from (after the base stages)"
    )
    parser.add_argument("--root", type=Path, required=True, help="the grasp dataset the folds are drawn from")
    parser.add_argument("--out", type=Path, required=True, help="folder for data, runs, evaluations and the table")
    parser.add_argument("--variants", type=lambda t: parse_list(t, VARIANTS), default=list(VARIANTS))
    parser.add_argument("--strategies", type=lambda t: parse_list(t, STRATEGIES), default=list(STRATEGIES))
    parser.add_argument("--splits", type=lambda t: parse_list(t, ("iw", "ow")), default=["iw", "ow"])
    parser.add_argument("--folds", type=lambda t: [int(k) for k in parse_list(t)], default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=150, help="training steps per cell")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--lr-pretrain", type=float, default=2e-3, help="the paper's projector-only rate")
    parser.add_argument("--lr-lora", type=float, default=1e-3)
    parser.add_argument("--limit", type=int, default=40, help="held-out images scored per fold (0: all)")
    parser.add_argument("--augment", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--decimals", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path, what in ((args.base / "config.json", "--base checkpoint"), (args.root, "--root dataset")):
        if not path.exists():
            parser.error(f"{what} {path} does not exist")
    args.out.mkdir(parents=True, exist_ok=True)
    cells = [(s, k, v, st) for s in args.splits for k in args.folds for v in args.variants for st in args.strategies]
    results: dict = {}
    start = time.monotonic()
    runner = Runner(args.out, echo=lambda line: None)  # logs/<stage>.log, stages.json, pipeline.log under --out
    for i, (split, fold, variant, strategy) in enumerate(cells, 1):
        summary = run_cell(args, split, fold, variant, strategy, runner)
        results[f"{split}{fold}-{variant}-{strategy}"] = summary
        print(
            f"[{i}/{len(cells)}] {split} fold {fold} {variant:>4} {strategy:<8} accuracy {100 * summary['accuracy']:5.1f} % "
            f"(n={summary['n']}, parse failures {100 * summary['parse_failure_rate']:.0f} %)  {time.monotonic() - start:.0f} s",
            flush=True,
        )
    markdown = table(results, args)
    (args.out / "table1.md").write_text("# Table I at small scale\n\n" + markdown)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    cells_json = {
        k: {m: v.get(m) for m in ("accuracy", "n", "parse_failure_rate", "mean_answer_tokens", "category_accuracy")}
        for k, v in results.items()
    }
    (args.out / "table1.json").write_text(json.dumps({"config": config, "cells": cells_json}, indent=1) + "\n")
    print("\n" + markdown)
    print(f"written: {args.out / 'table1.md'}, {args.out / 'table1.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
