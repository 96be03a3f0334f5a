"""Table I done fairly: does reasoning before the pose help? RT, NR-A and NR-B rows from one neutral base, a budget
set by a pilot on a validation set, every test request scored, paired statistics.

    python bench/table1_fair.py gate   --root DATA --base BASE --out bench/results/table1-fair
    python bench/table1_fair.py pilot  --root DATA --base BASE --out bench/results/table1-fair --pilot-steps 600
    python bench/table1_fair.py run    --root DATA --base BASE --out bench/results/table1-fair --steps S
    python bench/table1_fair.py report --root DATA --base BASE --out bench/results/table1-fair --cnn VISION_CKPT

The base is a pipeline build whose ground stage answered in a format none of the rows uses
(``python -m training.pipeline tiny --until ground --set objects=1-5 --set ground_steps=1600 --set ground_task=locate``: where
each part of the named object lies, no angle, no brackets), made from other images than ``--root``'s (another
``training.synth --scene-seed``), so no fold's test image was ever seen.

- ``gate`` reads, from the base alone, each row's parse rate and pose-token loss on the validation images. They
  must be comparable before any cell runs (``GATE``).
- ``pilot`` trains each row on fold 0 of the image-wise split with ``--validation`` images set aside and records
  its learning curve on them (never the test fold); ``S`` is the step where every curve has flattened.
- ``run`` trains every cell (split × fold × row × tuning) for ``--steps`` with at most 10 % warm-up, the training
  seed apart from the split seed, one replicate training seed on fold 0, and scores every test request.
- ``report`` writes table1.md and table1.json: each cell's Wilson interval, each row's mean ± std over folds
  and pooled accuracy, the floor, CNN and oracle rows, and paired tests between rows (McNemar stratified by fold,
  Holm-corrected), for the rectangle and the part metric.

Every stage goes through ``training.pipeline``'s runner: a stage whose outputs exist is not redone, so a run
resumes where it stopped, also after a crash between a checkpoint and its evaluation. The results (gate.json,
pilot.json, learning-curves.png, table1.md, table1.json) go to ``--out``; the folds' data, runs, evaluations and
logs to ``--work`` (default runs/table1-fair, which git ignores).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.paper_tables import parse_list  # noqa: E402
from bench.stats import holm, mean_std, paired_test, wilson  # noqa: E402
from training.pipeline import Runner, Stage  # noqa: E402

VARIANTS = ("rt", "nr-a", "nr-b")
STRATEGIES = ("pretrain", "lora")
STRATEGY_NAMES = {"pretrain": "projector only", "lora": "LoRA + projector"}
SPLITS = ("iw", "ow", "cw")
SPLIT_NAMES = {"iw": "image-wise", "ow": "object-wise", "cw": "category-wise"}
METRICS = {"rectangle": "correct", "part": "part_correct"}
"""The two metrics and the per-request field of ``training.evaluate``'s answers that holds each."""
GATE = {"loss_ratio": 1.5, "parse_spread": 0.10}
"""Comparable at step 0: the rows' pose-token losses within this ratio (largest / smallest) and their parse
rates within this many points of each other."""
FLAT = 0.03
"""A learning curve has flattened at the first evaluation after which it never rises more than this above it."""
MAX_WARMUP = 0.10
LENGTH_SPLIT = 1
"""Passes of like length per micro-batch (see --length-split). A cell's records have no follow-ups and nearly one
length, so passes save no padding: LoRA steps of 32 in micro-batches of 16 from runs/device-build's align checkpoint
took 2.90 s at 1 and 2.97 s at 4 (RT answers), 2.12 and 2.17 s (NR-A) on 2 cores, steps 10-30."""


# ---------------------------------------------------------------------------------------------------- stages


def data_stage(args, split: str, fold: int, variant: str, validation: int = 0) -> tuple[Stage, Path]:
    """build_dataset for one fold and row (``validation``: training images set aside as val.json: the pilot)."""
    name = f"pilot-{variant}" if validation else f"{split}{fold}-{variant}"
    out = args.work / "data" / name
    build = ["--root", str(args.root), "--variant", variant, "--split", split, "--fold", str(fold), "--out", str(out),
             "--size", str(args.size), "--crop", str(args.crop), "--decimals", str(args.decimals),
             "--augment", str(args.augment), "--targets", "one", "--seed", str(args.split_seed),
             "--absent-fraction", str(args.absent_fraction),
             *(["--validation", str(validation)] if validation else [])]  # fmt: skip
    return Stage(f"data-{name}", "training.build_dataset", tuple(build), (str(out / "train.json"),), True), out


def warmup(steps: int) -> int:
    return max(1, int(MAX_WARMUP * steps))


def cell_name(split: str, fold: int, variant: str, strategy: str, seed: int | None = None) -> str:
    return f"{split}{fold}-{variant}-{strategy}" + (f"-seed{seed}" if seed is not None else "")


def train_stages(
    args, name: str, data: Path, strategy: str, steps: int, seed: int, *extra: str, save_every: int | None = None
) -> tuple[list, Path]:
    """Train (and merge LoRA) one row from the base; the stages and the plain checkpoint they leave.

    ``save_every`` (a long run: the pilot's) keeps a checkpoint that often and trains with ``--resume``, so a run
    stopped mid-way (the session ended, the machine died) goes on from its last checkpoint when rerun."""
    run = args.work / "runs" / name
    lr = args.lr_pretrain if strategy == "pretrain" else args.lr_lora
    keep = ["--save-every", str(save_every), "--resume"] if save_every else ["--save-every", str(steps)]
    train = ["--strategy", strategy, "--model", str(args.base), "--data", str(data), "--out", str(run),
             "--steps", str(steps), "--warmup", str(warmup(steps)), "--batch-size", str(args.batch_size),
             "--micro-batch", str(args.micro_batch), "--lr", str(lr), *keep, "--seed", str(seed), *extra]  # fmt: skip
    checkpoint = run / f"checkpoint-{steps:06d}"
    speed = ("--length-split", str(args.length_split)) if args.length_split > 1 else ()
    stages = [Stage(f"train-{name}", "training.train", tuple(train), (str(checkpoint),), True, speed)]
    if strategy == "lora":
        merged = run / "merged"
        stages.append(
            Stage(f"merge-{name}", "training.merge", ("--adapter", str(checkpoint), "--out", str(merged)),
                  (str(merged),), True)
        )  # fmt: skip
        checkpoint = merged
    return stages, checkpoint


def cell_stages(args, split: str, fold: int, variant: str, strategy: str, seed: int) -> tuple[list[Stage], Path]:
    """One cell: its data, training, merge and the evaluation of every test request; the result file."""
    replicate = seed if seed != args.train_seed else None
    name = cell_name(split, fold, variant, strategy, replicate)
    data, data_dir = data_stage(args, split, fold, variant)
    stages, checkpoint = train_stages(args, name, data_dir, strategy, args.steps, seed)
    result = args.work / "eval" / f"{name}.json"
    evaluate = ["--model", str(checkpoint), "--root", str(args.root), "--split", split, "--fold", str(fold),
                "--seed", str(args.split_seed), "--json", str(result)]  # fmt: skip
    return [data, *stages, Stage(f"eval-{name}", "training.evaluate", tuple(evaluate), (str(result),), True)], result


def cells(args) -> list[tuple[str, int, str, str, int]]:
    """(split, fold, row, tuning, training seed) of every cell, the replicate seed's on fold 0 last."""
    plain = [
        (s, k, v, t, args.train_seed)
        for s in args.splits
        for k in args.folds
        for v in VARIANTS
        for t in args.strategies
    ]
    extra = [(s, 0, v, t, args.replicate_seed) for s in args.splits for v in VARIANTS for t in args.strategies]
    return plain + (extra if args.replicate_seed is not None and 0 in args.folds else [])


# ------------------------------------------------------------------------------------------------------ gate


def pose_spans(answer: str, offset: int) -> list[tuple[int, int]]:
    """Character spans (in the whole text) of the pose's three numbers: the last three in the answer."""
    numbers = list(re.finditer(r"-?\d+\.\d+", answer))[-3:]
    return [(offset + m.start(), offset + m.end()) for m in numbers]


def pose_token_loss(model, processor, record: dict, root: Path) -> tuple[float, int]:
    """Summed cross-entropy of the tokens that write the pose's numbers, teacher-forced, and their count."""
    import torch
    from PIL import Image

    from training.data import conversation_text

    turns = record["conversations"][:2]
    text, targets = conversation_text(turns)
    spans = pose_spans(turns[1]["value"], targets[0][0] + 1)
    enc = processor.tokenizer(text, return_offsets_mapping=True)
    image_id = model.config.image_token_index
    tokens = model.config.image_seq_length
    ids, wanted = [], []
    for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        ids += [token] * (tokens if token == image_id else 1)
        wanted += [False] * (tokens - 1 if token == image_id else 0)
        wanted.append(token != image_id and any(a < end and start < b for a, b in spans))
    with Image.open(root / record["image"]) as img:
        pixels = processor.image_processor(img.convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), pixel_values=pixels).logits[0]
    positions = [i for i, w in enumerate(wanted) if w and i > 0]
    if not positions:
        return 0.0, 0
    predicted = logits[[i - 1 for i in positions]]
    loss = torch.nn.functional.cross_entropy(predicted, torch.tensor([ids[i] for i in positions]), reduction="sum")
    return float(loss), len(positions)


def gate(args) -> dict:
    """Each row's step-0 parse rate and pose-token loss, from the base, on the pilot's validation images."""
    from PIL import Image

    from appliance.answer import AnswerFormat, AnswerParseError, AnswerRefused
    from training.evaluate import answer_many
    from training.model import PROMPT_TEMPLATE, load_llava

    runner = Runner(args.work, echo=lambda line: None)
    data = {}
    for variant in VARIANTS:
        stage, data[variant] = data_stage(args, "iw", 0, variant, args.validation)
        runner.run([stage])
    model, processor = load_llava(args.base)
    model.eval()
    rows = {}
    for variant in VARIANTS:
        fmt = AnswerFormat(variant, args.decimals, refusals=args.absent_fraction > 0)
        records = [r for r in json.loads((data[variant] / "val.json").read_text()) if r.get("grasps")]
        records = records[: args.gate_records]
        parsed, loss, tokens = 0, 0.0, 0
        images = []
        for record in records:
            with Image.open(data[variant] / record["image"]) as img:
                images.append(img.convert("RGB"))
        prompts = [
            PROMPT_TEMPLATE.format(instruction=r["conversations"][0]["value"].split("\n", 1)[-1]) for r in records
        ]
        for record, (text, _) in zip(records, answer_many(model, processor, images, prompts)):
            try:
                fmt.parse(text)
                parsed += 1
            except (AnswerParseError, AnswerRefused):
                pass
            total, n = pose_token_loss(model, processor, record, data[variant])
            loss, tokens = loss + total, tokens + n
        rows[variant] = {"parse_rate": parsed / len(records), "pose_token_loss": loss / max(tokens, 1),
                         "records": len(records)}  # fmt: skip
    losses = [r["pose_token_loss"] for r in rows.values()]
    parses = [r["parse_rate"] for r in rows.values()]
    verdict = {
        "loss_ratio": max(losses) / max(min(losses), 1e-9),
        "parse_spread": max(parses) - min(parses),
    }
    verdict["comparable"] = (
        verdict["loss_ratio"] <= GATE["loss_ratio"] and verdict["parse_spread"] <= GATE["parse_spread"]
    )
    result = {"base": os.path.relpath(args.base), "rows": rows, **verdict, "limits": GATE}
    (args.out / "gate.json").write_text(json.dumps(result, indent=1) + "\n")
    for variant, row in rows.items():
        print(f"{variant:>5}: parse rate {100 * row['parse_rate']:5.1f} %, pose-token loss {row['pose_token_loss']:.3f} "
              f"({row['records']} validation requests)")  # fmt: skip
    print(f"loss ratio {verdict['loss_ratio']:.2f} (≤ {GATE['loss_ratio']}), parse spread "
          f"{100 * verdict['parse_spread']:.1f} points (≤ {100 * GATE['parse_spread']:.0f}): "
          + ("comparable" if verdict["comparable"] else "NOT comparable"))  # fmt: skip
    return result


# ----------------------------------------------------------------------------------------------------- pilot


def read_curve(metrics: Path) -> list[tuple[int, float]]:
    """(step, validation accuracy) in step order; a step logged twice keeps its last value (a resumed run redoes the
    steps after its last checkpoint: it now drops their rows first, but a run resumed before it did logged both)."""
    with metrics.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and r.get("val_accuracy")]
    return sorted({int(r["step"]): float(r["val_accuracy"]) for r in rows}.items())


def flattened(curve: list[tuple[int, float]], tolerance: float = FLAT) -> int:
    """The first evaluated step after which the curve never rises more than ``tolerance`` above its value there."""
    for i, (step, accuracy) in enumerate(curve):
        if max(a for _, a in curve[i:]) - accuracy <= tolerance:
            return step
    raise ValueError("empty learning curve")


def still_rising(curve: list[tuple[int, float]], tolerance: float = FLAT) -> bool:
    """Flat only from the last evaluation on: nothing says the curve would not rise further."""
    return len(curve) > 1 and flattened(curve, tolerance) == curve[-1][0]


def pilot(args) -> dict:
    """Learning curves of every row (LoRA and projector-only) on fold 0's validation images; S where all flatten."""
    runner = Runner(args.work, echo=lambda line: None)
    curves = {}
    for variant in VARIANTS:
        data, data_dir = data_stage(args, "iw", 0, variant, args.validation)
        runner.run([data])
        val = len(json.loads((data_dir / "val.json").read_text()))
        for strategy in args.strategies:
            name = f"pilot-{variant}-{strategy}"
            # the run's folder names its length: a resumed run never picks up a checkpoint of another schedule
            stages, _ = train_stages(args, f"{name}-{args.pilot_steps}", data_dir, strategy, args.pilot_steps,
                                     args.train_seed, "--eval-every", str(args.every), "--eval-on", "val",
                                     "--eval-images", str(val), save_every=args.save_every)  # fmt: skip
            runner.run(stages[:1])
            curves[name] = read_curve(args.work / "runs" / f"{name}-{args.pilot_steps}" / "metrics.csv")
            print(f"{name}: " + ", ".join(f"{s} {100 * a:.0f} %" for s, a in curves[name]), flush=True)
    flat = {name: flattened(curve) for name, curve in curves.items()}
    steps = max(flat.values())
    rising = sorted(name for name, curve in curves.items() if still_rising(curve))
    result = {"pilot_steps": args.pilot_steps, "every": args.every, "tolerance": FLAT, "curves": curves,
              "flattened": flat, "still_rising": rising, "S": steps, "warmup": warmup(steps)}  # fmt: skip
    (args.out / "pilot.json").write_text(json.dumps(result, indent=1) + "\n")
    draw_curves(curves, steps, args.out / "learning-curves.png")
    if rising:
        print(f"still rising at step {args.pilot_steps}: {', '.join(rising)}; run a longer pilot (--pilot-steps)")
    else:
        print(f"every curve has flattened by step {steps}: run with --steps {steps} (warm-up {warmup(steps)})")
    return result


def draw_curves(curves: dict, chosen: int, path: Path, size: tuple[int, int] = (720, 420)) -> None:
    """Validation accuracy against step, one line per row, the chosen S dashed (PIL: no plotting library)."""
    from PIL import Image, ImageDraw

    colours = {"rt": (200, 40, 40), "nr-a": (30, 90, 200), "nr-b": (30, 150, 60)}
    w, h = size
    left, right, top, bottom = 60, 150, 20, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    last = max([s for curve in curves.values() for s, _ in curve] + [chosen, 1])

    def at(step: float, accuracy: float) -> tuple[float, float]:
        return left + (w - left - right) * step / last, h - bottom - (h - top - bottom) * accuracy

    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x, y = at(0, tick)
        draw.text((x - 40, y - 6), f"{100 * tick:.0f} %", fill="black")
    draw.text((left, h - bottom + 8), "0", fill="black")
    draw.text((w - right - 30, h - bottom + 8), f"{last} steps", fill="black")
    x, _ = at(chosen, 0)
    for y in range(top, h - bottom, 8):
        draw.line([x, y, x, y + 4], fill="gray")
    draw.text((x + 4, top + 4), f"S = {chosen}", fill="gray")
    for row, (name, curve) in enumerate(sorted(curves.items())):
        variant = next(v for v in sorted(VARIANTS, key=len, reverse=True) if f"-{v}-" in f"-{name.split('pilot-')[-1]}")
        colour = colours[variant]
        width = 3 if name.endswith("lora") else 1
        if len(curve) > 1:
            draw.line([at(s, a) for s, a in curve], fill=colour, width=width)
        ly = top + 16 * row
        draw.line([w - right + 10, ly + 6, w - right + 30, ly + 6], fill=colour, width=width)
        draw.text((w - right + 35, ly), name.removeprefix("pilot-"), fill="black")
    image.save(path)


# ------------------------------------------------------------------------------------------------------- run


def run(args) -> None:
    runner = Runner(args.work, echo=lambda line: None)
    (args.work / "eval").mkdir(parents=True, exist_ok=True)
    todo = cells(args)
    start = time.monotonic()
    for i, (split, fold, variant, strategy, seed) in enumerate(todo, 1):
        stages, result = cell_stages(args, split, fold, variant, strategy, seed)
        runner.run(stages)
        summary = json.loads(result.read_text())
        print(f"[{i}/{len(todo)}] {result.stem}: rectangle {100 * summary['accuracy']:5.1f} %, part "
              f"{100 * (summary.get('part_accuracy') or 0):5.1f} % (n={summary['n']})  {time.monotonic() - start:.0f} s",
              flush=True)  # fmt: skip


# ---------------------------------------------------------------------------------------------------- report


def outcomes(result: dict, field: str) -> dict[tuple, bool]:
    """(image, instruction) → right or wrong, for every request a cell scored."""
    return {
        (a["image"], a.get("instruction")): bool(a.get(field)) for a in result["answers"] if a.get(field) is not None
    }


def fold_baselines(args, split: str, fold: int) -> dict:
    """The floor and (with --cnn) CNN rows on one fold's test requests, cached beside the cells' evaluations."""
    path = args.work / "eval" / f"baselines-{split}{fold}.json"
    if not path.is_file():
        from training.datasets import open_dataset
        from training.evaluate import held_out
        from training.judging import baselines

        dataset, ids = held_out(open_dataset(args.root), split, fold, seed=args.split_seed)
        path.write_text(json.dumps(baselines(dataset, ids, args.cnn, args.crop), indent=1) + "\n")
    return json.loads(path.read_text())


def summarise(per_fold: dict[int, dict[tuple, bool]]) -> dict:
    """A row on one split: per-fold accuracy with its Wilson interval, mean ± std over folds, pooled."""
    folds = {}
    for fold, rows in per_fold.items():
        right = sum(rows.values())
        low, high = wilson(right, len(rows))
        folds[fold] = {"accuracy": right / len(rows) if rows else 0.0, "n": len(rows), "wilson95": [low, high]}
    mean, std = mean_std([f["accuracy"] for f in folds.values()])
    right = sum(sum(rows.values()) for rows in per_fold.values())
    n = sum(len(rows) for rows in per_fold.values())
    return {"mean": mean, "std": std, "pooled": right / n if n else 0.0, "n": n, "wilson95": list(wilson(right, n)),
            "folds": folds}  # fmt: skip


def report(args) -> dict:
    rows, tests = {}, {}
    for split in args.splits:
        for metric, field in METRICS.items():
            outcomes_by_row = {}
            for strategy in args.strategies:
                for variant in VARIANTS:
                    per_fold = {}
                    for fold in args.folds:
                        path = args.work / "eval" / f"{cell_name(split, fold, variant, strategy)}.json"
                        if not path.is_file():
                            raise FileNotFoundError(f"{path} is missing: run `table1_fair.py run` first")
                        per_fold[fold] = outcomes(json.loads(path.read_text()), field)
                    outcomes_by_row[(variant, strategy)] = per_fold
                    summary = summarise(per_fold)
                    replicate = (
                        args.work / "eval" / f"{cell_name(split, 0, variant, strategy, args.replicate_seed)}.json"
                    )
                    if args.replicate_seed is not None and 0 in per_fold and replicate.is_file():
                        again = outcomes(json.loads(replicate.read_text()), field)
                        summary["replicate"] = {"seed": args.replicate_seed, "fold": 0,
                                                "accuracy": sum(again.values()) / max(len(again), 1),
                                                "accuracy_train_seed": summary["folds"][0]["accuracy"]}  # fmt: skip
                    rows.setdefault(f"{variant}/{strategy}", {}).setdefault(split, {})[metric] = summary
                pairs = {}
                for a, b in combinations(VARIANTS, 2):
                    strata = {}
                    for fold in args.folds:
                        x, y = outcomes_by_row[(a, strategy)][fold], outcomes_by_row[(b, strategy)][fold]
                        keys = sorted(set(x) & set(y), key=str)
                        strata[f"{split}{fold}"] = ([x[k] for k in keys], [y[k] for k in keys])
                    test = paired_test(strata)
                    pairs[f"{a} vs {b}"] = {"a_only": test.a_only, "b_only": test.b_only, "n": test.n,
                                            "p": test.p_value, "exact": test.exact}  # fmt: skip
                for name, p in holm({k: v["p"] for k, v in pairs.items()}).items():
                    pairs[name]["p_holm"] = p
                tests.setdefault(split, {}).setdefault(metric, {})[strategy] = pairs
            for kind in ("floor", "cnn", "oracle"):
                per_fold = {}
                for fold in args.folds:
                    summary = fold_baselines(args, split, fold).get(kind)
                    if isinstance(summary, dict) and "accuracy" in summary:
                        value = summary["accuracy"] if metric == "rectangle" else summary.get("part_accuracy") or 0.0
                        per_fold[fold] = {"accuracy": value, "n": summary["n"]}
                if per_fold:
                    mean, std = mean_std([f["accuracy"] for f in per_fold.values()])
                    n = sum(f["n"] for f in per_fold.values())
                    pooled = sum(f["accuracy"] * f["n"] for f in per_fold.values()) / n
                    rows.setdefault(kind, {}).setdefault(split, {})[metric] = {
                        "mean": mean, "std": std, "pooled": pooled, "n": n, "folds": per_fold}  # fmt: skip
    result = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"},
              "rows": rows, "paired_tests": tests}  # fmt: skip
    (args.out / "table1.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (args.out / "table1.md").write_text(markdown(result, args))
    print(markdown(result, args))
    return result


def markdown(result: dict, args) -> str:
    lines = ["# Table I, done fairly", ""]
    for metric in METRICS:
        lines += [f"## {metric} metric: mean ± std over folds (pooled, n)", ""]
        lines.append("| row | tuning | " + " | ".join(SPLIT_NAMES[s] for s in args.splits) + " |")
        lines.append("|---|---|" + "---|" * len(args.splits))
        for name, by_split in result["rows"].items():
            variant, _, strategy = name.partition("/")
            cells = []
            for split in args.splits:
                cell = by_split.get(split, {}).get(metric)
                cells.append("–" if cell is None else f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f} "
                             f"({100 * cell['pooled']:.1f}, {cell['n']})")  # fmt: skip
            lines.append(f"| {variant.upper()} | {STRATEGY_NAMES.get(strategy, 'none')} | " + " | ".join(cells) + " |")
        lines.append("")
        spread = [
            f"{name.upper()} {SPLIT_NAMES[split]}: {100 * cell['replicate']['accuracy_train_seed']:.1f} → "
            f"{100 * cell['replicate']['accuracy']:.1f}"
            for name, by_split in result["rows"].items()
            for split, metrics in by_split.items()
            if (cell := metrics.get(metric)) and "replicate" in cell
        ]
        if spread:
            lines += [
                "Fold 0 trained again with another seed (training seed → replicate seed): " + "; ".join(spread),
                "",
            ]
        lines.append("Paired tests (McNemar stratified by fold, Holm-corrected over the three pairs):")
        lines.append("")
        for split in args.splits:
            for strategy, pairs in result["paired_tests"].get(split, {}).get(metric, {}).items():
                text = "; ".join(f"{pair}: {v['a_only']} vs {v['b_only']} discordant, p = {v['p_holm']:.3g}"
                                 for pair, v in pairs.items())  # fmt: skip
                lines.append(f"- {SPLIT_NAMES[split]}, {STRATEGY_NAMES[strategy]}: {text}")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, required=True, help="the scenes the folds are drawn from (training.synth)")
    common.add_argument("--base", type=Path, required=True, help="the neutral base every row starts from")
    common.add_argument("--out", type=Path, required=True, help="folder for the results: gate, pilot and the table")
    common.add_argument(
        "--work", type=Path, default=Path("runs/table1-fair"), help="folder for the folds' data, runs and evaluations"
    )
    common.add_argument("--splits", type=lambda t: parse_list(t, SPLITS), default=list(SPLITS))
    common.add_argument("--folds", type=lambda t: [int(k) for k in parse_list(t)], default=[0, 1, 2, 3, 4])
    common.add_argument("--strategies", type=lambda t: parse_list(t, STRATEGIES), default=list(STRATEGIES))
    common.add_argument("--split-seed", type=int, default=0, help="sets the folds and the augmentation")
    common.add_argument("--train-seed", type=int, default=1, help="sets the data order and the initialisation")
    common.add_argument("--replicate-seed", type=int, default=2, help="a second training seed on fold 0 (none: -1)")
    common.add_argument("--validation", type=int, default=60, help="fold 0's training images the pilot sets aside")
    common.add_argument("--batch-size", type=int, default=32)
    common.add_argument("--micro-batch", type=int, default=16)
    common.add_argument(
        "--length-split",
        type=int,
        default=LENGTH_SPLIT,
        help="run each micro-batch as this many passes of like length (train --length-split: the same gradient, "
        "less padding where lengths differ; default 1: a cell's records are nearly one length; a speed setting, so "
        "changing it retrains nothing)",
    )
    common.add_argument("--lr-pretrain", type=float, default=2e-3, help="the paper's projector-only rate")
    common.add_argument("--lr-lora", type=float, default=1e-3)
    common.add_argument("--augment", type=int, default=4)
    common.add_argument("--absent-fraction", type=float, default=0.15, help="the same refusal share in every row")
    common.add_argument("--size", type=int, default=224)
    common.add_argument("--crop", type=int, default=320)
    common.add_argument("--decimals", type=int, default=2)
    parser = argparse.ArgumentParser(prog="python bench/table1_fair.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:7]))  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("gate", parents=[common], help="each row's step-0 parse rate and pose-token loss")
    p.add_argument("--gate-records", type=int, default=200, help="validation requests the gate reads per row")
    p.set_defaults(func=gate)
    p = commands.add_parser("pilot", parents=[common], help="learning curves on validation images; chooses S")
    p.add_argument("--pilot-steps", type=int, default=600)
    p.add_argument("--every", type=int, default=50, help="evaluate the validation images every N steps")
    p.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps: a stopped run resumes there")
    p.set_defaults(func=pilot)
    p = commands.add_parser("run", parents=[common], help="every cell, every test request scored")
    p.add_argument("--steps", type=int, required=True, help="S, from the pilot (pilot.json)")
    p.set_defaults(func=run)
    p = commands.add_parser("report", parents=[common], help="table1.md and table1.json from the cells' evaluations")
    p.add_argument("--cnn", type=Path, help="a vision checkpoint whose heads give the CNN row (the base's own)")
    p.set_defaults(func=report)
    args = parser.parse_args(argv)
    if args.replicate_seed is not None and args.replicate_seed < 0:
        args.replicate_seed = None
    if args.replicate_seed == args.train_seed:
        parser.error("--replicate-seed must differ from --train-seed")
    for path, what in ((args.base / "config.json", "--base checkpoint"), (args.root, "--root dataset")):
        if not path.exists():
            parser.error(f"{what} {path} does not exist")
    # the runner names a stage's outputs relative to the work folder: every path it is given is absolute
    args.root, args.base, args.out, args.work = (p.resolve() for p in (args.root, args.base, args.out, args.work))
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        args.func(args)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.command}: {time.monotonic() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
