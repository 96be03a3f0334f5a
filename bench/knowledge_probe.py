"""Does the language stage's knowledge carry an instruction worded as no training instruction was to its object?

A text-only probe of the step a function instruction needs: "could you pass me a thing to whip cream?" must
resolve to the whisk, though every training instruction said "something to beat eggs with". A pretrained LLM
knows that whisks whip cream; our tiny decoder knows only what its language stage read. The probe trains, for
each arm (the corpus without and with ``referring.yaml``'s knowledge, read 8 or 64 times, with its purposes in
every wording or not, mixed into tuning or not; ``ARMS``) and seed:

1. the tokenizer and a tiny decoder (``training.model``'s shape), from that arm's corpus;
2. the language stage on that corpus (``--language-steps``, the pipeline's 300 by default);
3. a text-only stand-in for reasoning tuning (``--tune-steps``): "On the table: a mug, a whisk and a ball. hand me
   something to beat eggs with" → "Something to beat eggs with: a whisk.", train phrasings only, whole decoder;

and then writes greedy answers to tables it never saw, in four sets: train frames and uses (the control), train
frames with held-out uses (the validation set: of each use with two or more train phrasings the last, which the
probe's tuning never asks; designs are chosen on it), train frames with test uses, test frames with test uses
(what ``training.synth --phrasing test`` asks). An answer is right when it names the object meant (its name after
the colon). Chance is one in the table's 3-5 objects.

    python bench/knowledge_probe.py --out runs/knowledge-probe --seeds 0 1 2

Writes ``probe.json`` (every answer) and ``summary.json`` (counts and a few answers), and prints the table.
A second run into the same folder skips the arms and seeds already there. The images play no part: this measures the language
side alone, not what the whole model does (that is the pipeline's evaluation).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETS = ("train frames, train uses", "train frames, held-out uses", "train frames, test uses", "test frames, test uses")
PICKS = {  # set → (frames, uses); "held" is the validation set: see ``held_out``
    "train frames, train uses": ("train", "train"),
    "train frames, held-out uses": ("train", "held"),
    "train frames, test uses": ("train", "test"),
    "test frames, test uses": ("test", "test"),
}
ARMS = {  # (readings of each knowledge sentence in the corpus, share of each tuning batch that is knowledge,
    # each purpose in every wording of referring.PURPOSE_FORMS too, hints appended to the instruction)
    "no knowledge": (0, 0.0, False, False),
    "knowledge": (8, 0.0, False, False),
    "knowledge, also in tuning": (8, 0.25, False, False),
    "echo, knowledge, also in tuning": (8, 0.25, False, False),
    "knowledge x64": (64, 0.0, False, False),  # the corpus's default (KNOWLEDGE_REPEATS)
    "knowledge x64, also in tuning": (64, 0.25, False, False),
    "purpose forms x10": (10, 0.0, True, False),  # 1,110 sentences x 10: as many lines as 180 x 64
    "purpose forms x10, also in tuning": (10, 0.25, True, False),
    "knowledge x64, hints": (64, 0.0, False, True),  # appliance.hints: "… whip cream? Hint: a whisk."
    "no knowledge, hints": (0, 0.0, False, True),
    "object first, knowledge x64, hints": (64, 0.0, False, True),  # "A whisk is something to beat eggs with."
    "object first, knowledge x64": (64, 0.0, False, False),
    "object first, knowledge x64, hints, masked": (64, 0.0, False, True),  # MASKED of the tuning's use phrases
}
MASKED = 0.5
"""In the "masked" arm, the share of tuning instructions whose use phrase is replaced by 2-4 random words of the
hints' table, object names left out (``referring.masking_words``, as the pipeline draws them); the hint still
comes from the real phrase, so only the hint tells the object (the model must learn to read it, not only the
words it memorised). Session 21's first masked runs drew from every knowledge sentence and every use phrasing,
the validation and test phrasings' words ("thing", "tool", "toy") among them: a leak; rerun."""
USE_FIRST = "{Thing}: {a_name}."
"""The answer of every arm but the "object first" ones: the use's first train phrasing (with "echo" the
instruction's), then the object ("Something to beat eggs with: a whisk."): the pipeline's function resolution up
to session 20. The "object first" arms answer as ``referring.yaml`` now does: "A whisk is something to beat eggs
with." """


def held_out(ref) -> dict[str, str]:
    """The validation set's use phrasings: of each use with two or more train phrasings, the last ("a snack" of
    eat). Neither the probe's corpus nor its tuning holds them as instructions (the knowledge may hold their words,
    as it holds the test phrasings': "A banana is a snack."), so designs are chosen on them, never on the test
    phrasings."""
    return {use: sets["train"][-1] for use, sets in ref.uses.items() if len(sets["train"]) > 1}


def tables(ref, rng: random.Random, n: int, only=None) -> list[tuple[str, str, list[str]]]:
    """``n`` (use, target category, table) draws: the target has the use, no other object on the table has it
    (``only``: uses drawn from these alone)."""
    by_use: dict[str, list[str]] = {}
    for category, uses in ref.category_uses.items():
        for use in uses:
            by_use.setdefault(use, []).append(category)
    out = []
    uses = sorted(only if only is not None else by_use)
    for k in range(n):
        use = uses[k % len(uses)]
        target = rng.choice(sorted(by_use[use]))
        others = [c for c in sorted(ref.category_uses) if use not in ref.category_uses[c] and c != target]
        table = [target, *rng.sample(others, rng.randint(2, 4))]
        rng.shuffle(table)
        out.append((use, target, table))
    return out


def listing(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


def examples(
    ref,
    templates,
    rng: random.Random,
    n: int,
    frames: str,
    uses: str,
    echo: bool = False,
    knowledge=None,
    object_first: bool = False,
    masked: float = 0.0,
) -> list[dict]:
    """Prompts and answers: a table, a function instruction (``frames``: train or test phrasings; ``uses``: train
    (less the held-out ones), held or test). The answer opens with the use's first train phrasing ("Something to
    beat eggs with: a whisk."), or with ``echo`` with the phrasing the instruction used ("A thing to whip cream: a
    whisk."). With ``knowledge`` (``appliance.hints.Knowledge``) the instruction carries its hint, as the
    appliance's first turn does; ``object_first`` answers with the pipeline's resolution (``USE_FIRST`` otherwise);
    ``masked``: see ``MASKED``."""
    from training.reasoning.referring import masking_words, resolution

    held = held_out(ref)
    vocabulary = masking_words(knowledge, templates) if masked else []
    out = []
    for use, target, table in tables(ref, rng, n, only=held if uses == "held" else None):
        frame = rng.choice(ref.phrasings["function"][frames])
        if uses == "held":
            thing = held[use]
        else:
            thing = rng.choice([p for p in ref.uses[use][uses] if uses != "train" or p != held.get(use)])
        instruction = frame.format(thing=thing)
        hint = knowledge.hint(instruction) if knowledge is not None else ""
        if masked and rng.random() < masked:
            instruction = frame.format(thing=" ".join(rng.sample(vocabulary, rng.randint(2, 4))))
        instruction += hint
        a_names = [templates.category(c).a_name for c in table]
        prompt = f"USER: On the table: {listing(a_names)}. {instruction} ASSISTANT:"
        a_name = templates.category(target).a_name
        canonical = ref.uses[use]["train"][0]
        if object_first:  # the pipeline's resolution since session 21 (referring.yaml)
            answer = resolution("function", a_name, {"use": use})
        else:  # the arms before it: the use first
            answer = USE_FIRST.format(
                Thing=(thing if echo else canonical)[:1].upper() + (thing if echo else canonical)[1:], a_name=a_name
            )
        out.append({"prompt": prompt, "answer": answer, "target": target, "table": table, "use": use})
    return out


def train_loop(model, loss_fn, params, steps: int, lr: float, batch: int, label: str) -> float:
    import torch

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warm = max(1, steps // 10)
    model.train()
    last = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warm)
        loss = loss_fn(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        last.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"  {label} step {step + 1}: loss {sum(last[-100:]) / len(last[-100:]):.3f}", flush=True)
    return sum(last[-50:]) / len(last[-50:])


def tune_loss(model, tok, records: list[dict], rng: random.Random, facts: list[str] = (), share: float = 0.0):
    """Teacher-forced loss on the answers only; ``share`` of each batch is knowledge lines from ``facts`` instead
    (their whole text: the facts read beside the instructions)."""

    def loss(batch: int):
        n_facts = round(share * batch) if facts else 0
        chosen = [rng.choice(records) for _ in range(batch - n_facts)]
        prompts = [tok(r["prompt"], add_special_tokens=False)["input_ids"] for r in chosen]
        answers = [tok(" " + r["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in chosen]
        for line in (rng.choice(facts) for _ in range(n_facts)):
            prompts.append([tok.bos_token_id])
            answers.append(tok(line, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        return _batch_loss(model, tok, prompts, answers)

    return loss


def _batch_loss(model, tok, prompts, answers):
    import torch

    seqs = [p + a for p, a in zip(prompts, answers)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id)
    labels = torch.full((len(seqs), width), -100)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for k, (p, a) in enumerate(zip(prompts, answers)):
        ids[k, : len(p) + len(a)] = torch.tensor(p + a)
        labels[k, len(p) : len(p) + len(a)] = torch.tensor(a)
        mask[k, : len(p) + len(a)] = 1
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def answer(model, tok, prompt: str, max_new: int = 24) -> str:
    import torch

    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def recall(model, tok, templates) -> tuple[int, int]:
    """Whether the decoder learnt the facts: (right, asked) over every knowledge sentence with words before its
    object ("People whip cream with" → "a whisk"), completed greedily."""
    from training.reasoning.corpus import knowledge_lines

    right = asked = 0
    for category in templates.categories.values():
        for line in set(knowledge_lines([category], purpose_forms=False)):  # the same 133 questions in every arm
            before, found, _ = line.partition(" " + category.a_name)
            if not found or not before:
                continue
            asked += 1
            right += answer(model, tok, before, max_new=8).startswith(category.a_name)
    return right, asked


def checkpoint_recall(checkpoints: list[Path]) -> list[dict]:
    """The same recall measure on pipeline checkpoints (any LLaVA directory, the text alone): whether the facts its
    language stage read are still known after the stages that never show them (align, ground, tune)."""
    from training.model import load_llava
    from training.reasoning import load_templates

    templates, out = load_templates(), []
    for checkpoint in checkpoints:
        model, processor = load_llava(checkpoint)
        model.eval()
        right, asked = recall(model, processor.tokenizer, templates)
        out.append({"checkpoint": str(checkpoint), "facts_recalled": [right, asked]})
        print(f"{checkpoint}: {right}/{asked} facts recalled", flush=True)
    return out


def named(text: str, target: str, templates, object_first: bool = False) -> bool:
    """The answer names the object meant after its colon ("…: a whisk."), or with ``object_first`` before its
    " is " ("A whisk is …")."""
    if object_first:
        return text.partition(" is ")[0].strip().lower() == templates.category(target).a_name.lower()
    _, _, after = text.partition(":")
    return after.strip().rstrip(".") == templates.category(target).a_name


def run_arm(args, arm: str, seed: int) -> dict:
    import torch

    from training.model import LlavaShape, build_model
    from training.reasoning import load_templates
    from training.reasoning.corpus import corpus, knowledge_lines
    from training.reasoning.referring import load_referring, use_knowledge
    from training.stages import language_step_fn

    torch.manual_seed(seed)
    templates, ref = load_templates(), load_referring()
    repeats, share, forms, hints = ARMS[arm]
    held = frozenset(held_out(ref).values())  # validation phrasings: never read before the answers are scored
    knowledge = use_knowledge(templates, ref, leave_out=held) if hints else None
    lines = list(corpus(templates, seed=seed, knowledge=repeats, purpose_forms=forms, leave_out=held))
    model, processor = build_model(LlavaShape(), seed=seed, lines=lines)
    tok = processor.tokenizer
    started = time.monotonic()
    params, loss_fn, _, _ = language_step_fn(model, processor, seed, lines=lines)  # the tuning trains these too
    language = train_loop(model, loss_fn, params, args.language_steps, 1e-3, 32, f"{arm} {seed} language")
    model.eval()
    facts_known = recall(model, tok, templates)
    rng = random.Random(f"{seed}:records")
    echo, first = arm.startswith("echo"), arm.startswith("object first")
    masked = MASKED if arm.endswith("masked") else 0.0
    train = examples(ref, templates, rng, 4000, "train", "train", echo, knowledge, first, masked)
    facts = list(knowledge_lines(list(templates.categories.values()), forms)) if share else []
    loss = tune_loss(model, tok, train, rng, facts, share)
    tune = train_loop(model, loss, params, args.tune_steps, 1e-3, 32, f"{arm} {seed} tune")
    model.eval()
    scored = {}
    for name in SETS:
        frames, uses = PICKS[name]
        per_set = args.per_set if uses != "held" else args.per_held
        draw = random.Random(f"{seed}:{name}:eval")
        rows = examples(ref, templates, draw, per_set, frames, uses, echo, knowledge, first)
        for row in rows:
            row["written"] = answer(model, tok, row["prompt"])
            row["right"] = named(row["written"], row["target"], templates, first)
        scored[name] = rows
    return {
        "arm": arm,
        "seed": seed,
        "corpus_lines": len(lines),
        "language_loss": language,
        "tune_loss": tune,
        "facts_recalled": facts_known,
        "settings": settings(args),
        "seconds": round(time.monotonic() - started, 1),
        "sets": scored,
    }


def settings(args) -> dict:
    """What a run depends on beside its arm and seed: a resumed probe only reuses runs made with the same."""
    return {
        "language_steps": args.language_steps,
        "tune_steps": args.tune_steps,
        "per_set": args.per_set,
        "per_held": args.per_held,
        "held_out": "corpus and tuning",  # where the validation phrasings are kept out of (earlier: tuning only)
    }


def summary(run: dict) -> dict:
    """One arm and seed without its answers: right of n per set, with the first three answers as examples."""
    keys = ("arm", "seed", "corpus_lines", "language_loss", "tune_loss", "facts_recalled", "settings", "seconds")
    sets = {
        name: {
            "right": sum(row["right"] for row in rows),
            "n": len(rows),
            "examples": [{k: row[k] for k in ("prompt", "answer", "written")} for row in rows[:3]],
        }
        for name, rows in run["sets"].items()
    }
    return {k: run.get(k) for k in keys} | {"sets": sets}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python bench/knowledge_probe.py --out runs/knowledge-probe --seeds 0 1",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for probe.json (results so far are kept)")
    parser.add_argument(
        "--recall",
        type=Path,
        nargs="+",
        metavar="CHECKPOINT",
        help="instead of the arms: the facts each pipeline checkpoint recalls, into OUT/recall.json",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run of each arm per seed")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS), help="the arms to run")
    parser.add_argument("--language-steps", type=int, default=300, help="language stage steps of 32 lines")
    parser.add_argument("--tune-steps", type=int, default=300, help="text-only tuning steps of 32")
    parser.add_argument("--per-set", type=int, default=177, help="answers scored per set (3 per use: 177)")
    parser.add_argument(
        "--per-held", type=int, default=130, help="answers scored in the validation set (13 per held-out use: 130)"
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.recall:
        missing = [str(c) for c in args.recall if not (c / "config.json").is_file()]
        if missing:
            parser.error(f"not a checkpoint (no config.json): {', '.join(missing)}")
        (args.out / "recall.json").write_text(json.dumps(checkpoint_recall(args.recall), indent=1))
        return 0
    path = args.out / "probe.json"
    done = json.loads(path.read_text()) if path.exists() else []
    for seed in args.seeds:
        for arm in args.arms:
            if any(r["arm"] == arm and r["seed"] == seed and r.get("settings") == settings(args) for r in done):
                continue
            done = [r for r in done if not (r["arm"] == arm and r["seed"] == seed)]  # other settings: run again
            done.append(run_arm(args, arm, seed))
            path.write_text(json.dumps(done, indent=1))
    (args.out / "summary.json").write_text(json.dumps([summary(r) for r in done], indent=1))
    current = [r for r in done if r.get("settings") == settings(args)]
    if len(current) < len(done):
        print(f"({len(done) - len(current)} runs made with other settings are in probe.json, not below)")
    print(f"{'arm':32} {'seed':>4} {'facts recalled':>15} " + " ".join(f"{s:>26}" for s in SETS))
    for r in current:
        known = r.get("facts_recalled")
        facts = f"{known[0]}/{known[1]}" if known else "-"
        cells = [
            f"{sum(x['right'] for x in r['sets'][s]) / len(r['sets'][s]):26.1%}" if s in r["sets"] else f"{'-':>26}"
            for s in SETS
        ]
        print(f"{r['arm']:32} {r['seed']:>4} {facts:>15} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
