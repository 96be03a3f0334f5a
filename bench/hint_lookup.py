"""What the hints' lookup alone does, before any model reads it: per instruction kind, how many instructions of a
scene set get a hint, and how many hints name the object meant; and how many of ``referring.yaml``'s use phrasings
find their objects (train, test, and each train phrasing left out of the table in turn).

    python bench/hint_lookup.py runs/device-build/data runs/fresh19/clutter
    python bench/hint_lookup.py --knowledge models/rtgrasp-tiny/knowledge.yaml runs/fresh19/clutter

Function instructions should get a hint that names their object; name, attribute, spatial and absent instructions
name it themselves and should get none (``appliance.hints``: a name after a determiner counts for nothing).
``--no-names`` looks up as before that rule, for comparison. No model, no torch: seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def scene_counts(knowledge, root: Path, templates) -> dict[str, Counter]:
    """Per kind: ``n``, ``hinted``, ``meant`` (with an object meant), ``right`` (the hint names it, maybe among
    others: a tie lists up to six) and ``only`` (the hint names it alone)."""
    path = root / "instructions.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist (a training.synth scene set has one)")
    counts: dict[str, Counter] = {}
    scenes: dict[str, list] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        c = counts.setdefault(row["kind"], Counter())
        hint = knowledge.objects_for(row["text"])
        c["n"] += 1
        c["hinted"] += bool(hint)
        if row.get("target") is not None:
            if row["image"] not in scenes:
                scenes[row["image"]] = json.loads((root / f"{row['image']}scene.json").read_text())["objects"]
            meant = templates.category(scenes[row["image"]][row["target"]]["category"]).a_name
            c["meant"] += 1
            c["right"] += meant in hint
            c["only"] += hint == [meant]
    return counts


def phrasing_counts(templates, ref, names: bool = True) -> dict[str, tuple[int, int]]:
    """(found, asked) for the use phrasings: train, test, and train with each left out of the table."""
    from training.reasoning.referring import use_knowledge

    def table(leave_out=frozenset()):
        knowledge = use_knowledge(templates, ref, leave_out)
        return knowledge if names else dataclasses.replace(knowledge, names=())

    knowledge = table()
    out = {}
    for phrasing in ("train", "test"):
        asked = [(use, p) for use, sets in ref.uses.items() for p in sets[phrasing]]
        found = sum(bool(_serves(templates, ref, use) & set(knowledge.objects_for(p))) for use, p in asked)
        out[phrasing] = (found, len(asked))
    asked = [(use, p) for use, sets in ref.uses.items() for p in sets["train"]]
    found = sum(bool(_serves(templates, ref, use) & set(table(frozenset({p})).objects_for(p))) for use, p in asked)
    out["train, each left out"] = (found, len(asked))
    return out


def _serves(templates, ref, use: str) -> set[str]:
    return {templates.category(c).a_name for c, uses in ref.category_uses.items() if use in uses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/hint_lookup.py", description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", type=Path, help="scene sets (training.synth --out folders)")
    parser.add_argument("--knowledge", type=Path, help="a knowledge.yaml (default: the table referring.yaml makes)")
    parser.add_argument("--no-names", action="store_true", help="look up without the names rule (as before it)")
    args = parser.parse_args(argv)
    from appliance.hints import KnowledgeError, load_knowledge
    from training.reasoning import load_templates
    from training.reasoning.referring import load_referring, use_knowledge

    templates, ref = load_templates(), load_referring()
    try:
        knowledge = load_knowledge(args.knowledge) if args.knowledge else use_knowledge(templates, ref)
    except KnowledgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.no_names:
        knowledge = dataclasses.replace(knowledge, names=())
    if not args.knowledge:
        for what, (found, asked) in phrasing_counts(templates, ref, not args.no_names).items():
            print(f"use phrasings, {what}: {found}/{asked} find their objects")
    for root in args.roots:
        print(f"\n{root}\n| kind | instructions | hinted | hint names the object meant | names it alone |")
        print("|---|---|---|---|---|")
        for kind, c in sorted(scene_counts(knowledge, root, templates).items()):
            right, only = (f"{c['right']}/{c['meant']}", f"{c['only']}/{c['meant']}") if c["meant"] else ("–", "–")
            print(f"| {kind} | {c['n']} | {c['hinted']} | {right} | {only} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
