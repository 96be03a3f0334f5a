"""Referring instructions for scenes of one or several objects: name, attribute, spatial, function, generic,
absent.

Each instruction but ``absent`` refers to exactly one object of its scene, checked when it is drawn:
a name only when its category is alone on the table, a colour only when no other object of that
category shares (or may share) the word, a size only by a clear ratio, a spatial relation only by a
clear margin, a use only when one object on the table has it. Phrasings come from ``referring.yaml``
in a train and a test set that share no frame.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from string import Formatter

import yaml

from .templates import load_templates

REFERRING_FILE = Path(__file__).parent / "referring.yaml"
KINDS = ("name", "attribute", "spatial", "function", "generic", "absent")
PHRASING_SETS = ("train", "test")
SPATIAL_MARGIN = 0.04
"""Metres by which the referred object must lead the runner-up in a spatial relation."""
SIZE_RATIO = 1.15
"""How much larger (footprint area) an object must be than every other of its category to be 'the larger'."""
RELATIONS = {  # which coordinate (base frame x, y) and sign make an object lead in a relation
    "left": (1, 1.0),
    "right": (1, -1.0),
    "near": (0, -1.0),
    "far": (0, 1.0),
}


PURPOSE_FORMS = (
    "You use {a_name} to {purpose}.",
    "To {purpose}, you use {a_name}.",
    "What do you use to {purpose}? {A_name}.",
    "If you need to {purpose}, take {a_name}.",
    "{A_name} is what you use to {purpose}.",
    "People use {a_name} to {purpose}.",
)
"""The wordings every purpose is stated in. A fact read in one wording only is hard to reach from another
(Allen-Zhu and Li, "Physics of Language Models 3.1": knowledge is extractable when each fact was read in many
wordings); the instruction "a thing to whip cream" must find the whisk through "whip cream", whatever the
sentence around it. No wording is an instruction frame or says "a thing"."""


@dataclass(frozen=True)
class Referring:
    """The referring phrasings (per kind and set), spatial phrases, uses, every category's uses, and the facts the
    language stage reads about uses and request words."""

    phrasings: dict[str, dict[str, tuple[str, ...]]]
    where: dict[str, dict[str, tuple[str, ...]]]
    uses: dict[str, dict[str, tuple[str, ...]]]
    category_uses: dict[str, tuple[str, ...]]
    resolution: dict[str, str]
    knowledge: dict[str, tuple[str, ...]]
    """Per use, facts about it in everyday words with an ``{a_name}`` / ``{A_name}`` slot: the language stage's
    stand-in for what a pretrained language model knows (the corpus fills them with each category of that use)."""
    words: tuple[str, ...]
    """Facts about the words of everyday requests ("To pass someone a thing is to hand it to them.")."""
    purposes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per use, what it is done for in base-form phrases ("whip cream"), each stated in every ``PURPOSE_FORMS``."""

    def facts(self, use: str, a_name: str, forms: bool = False) -> tuple[str, ...]:
        """The knowledge sentences of ``use`` about one object ("People whip cream with a whisk."), and with
        ``forms`` each of its purposes in every wording of ``PURPOSE_FORMS`` ("You use a whisk to whip cream.")."""
        names = {"a_name": a_name, "A_name": a_name[:1].upper() + a_name[1:]}
        sentences = [s.format(**names) for s in self.knowledge[use]]
        if forms:
            sentences += [f.format(purpose=p, **names) for p in self.purposes.get(use, ()) for f in PURPOSE_FORMS]
        return tuple(sentences)


def use_knowledge(templates, ref: Referring, leave_out: frozenset[str] = frozenset()):
    """The hints' knowledge (``appliance.hints``): per use, its facts with the object left out ("People whip cream
    with .") and its train phrasings (less ``leave_out``), and the categories that serve it; the words of every
    train frame are ignored ("hand me", "pick up"), and so is every category's name or synonym where an
    instruction says it ("the box"). The test phrasings are never in it."""
    from appliance.hints import Knowledge

    words = {}
    for use, sets in ref.uses.items():
        facts = [s.replace("{a_name}", "").replace("{A_name}", "") for s in ref.knowledge[use]]
        words[use] = tuple(facts + [p for p in sets["train"] if p not in leave_out])
    objects: dict[str, list[str]] = {use: [] for use in ref.uses}
    for category, uses in ref.category_uses.items():
        for use in uses:
            objects[use].append(templates.category(category).a_name)
    frames = " ".join(f for sets in ref.phrasings.values() for f in sets["train"])
    ignore = {w for w in re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", frames.lower()))}
    return Knowledge(words, {u: tuple(o) for u, o in objects.items()}, frozenset(ignore), object_names(templates))


def object_names(templates) -> tuple[str, ...]:
    """Every category's name and synonyms, lower-cased, once each, in the templates' order."""
    names = (n.lower() for c in templates.categories.values() for n in (c.name, *c.synonyms))
    return tuple(dict.fromkeys(names))


def masking_words(knowledge, templates) -> list[str]:
    """The words a masked use phrase is drawn from (``build_dataset --hint-masking``): every word of the hints'
    knowledge but the object names and their synonyms, so that a masked instruction never names an object (the
    hint alone must tell it)."""
    names = {w for name in object_names(templates) for w in re.findall(r"[a-z]+", name)}
    texts = [t for ts in knowledge.words.values() for t in ts]
    return sorted({w for t in texts for w in re.findall(r"[a-z]+", t.lower()) if len(w) > 1} - names)


def _sets(table: dict, where: str) -> dict[str, dict[str, tuple[str, ...]]]:
    out = {}
    for key, sets in table.items():
        if not isinstance(sets, dict) or set(sets) != set(PHRASING_SETS):
            raise ValueError(f"{where}: {key!r} needs exactly a train and a test list")
        train, test = tuple(sets["train"]), tuple(sets["test"])
        if not train or not test:
            raise ValueError(f"{where}: {key!r} has an empty train or test list")
        if set(train) & set(test):
            raise ValueError(f"{where}: {key!r} has phrasings in both sets: {sorted(set(train) & set(test))}")
        out[key] = {"train": train, "test": test}
    return out


@cache
def load_referring(path: Path = REFERRING_FILE) -> Referring:
    """Read and check ``referring.yaml``: both phrasing sets everywhere, a use for every template category, facts
    for every use."""
    data = yaml.safe_load(Path(path).read_text())
    phrasings = _sets(data["phrasings"], f"{path}: phrasings")
    missing = {"generic", "name", "colour", "size", "spatial", "function"} - set(phrasings)
    if missing:
        raise ValueError(f"{path}: phrasings lack {sorted(missing)}")
    uses = _sets(data["uses"], f"{path}: uses")
    category_uses = {name: tuple(u) for name, u in data["categories"].items()}
    unknown = sorted({u for us in category_uses.values() for u in us} - set(uses))
    if unknown:
        raise ValueError(f"{path}: categories use undefined uses {unknown}")
    uncovered = sorted(set(load_templates().categories) - set(category_uses))
    if uncovered:
        raise ValueError(f"{path}: no uses for template categories {uncovered}")
    resolution = {k: str(v) for k, v in data["resolution"].items()}
    if set(resolution) != set(KINDS) - {"absent"}:
        raise ValueError(f"{path}: resolution needs exactly the kinds {sorted(set(KINDS) - {'absent'})}")
    knowledge = _knowledge(data.get("knowledge") or {}, set(uses), f"{path}: knowledge")
    words = _words(data.get("words") or [], f"{path}: words")
    purposes = _purposes(data.get("purposes") or {}, set(uses), f"{path}: purposes")
    return Referring(
        phrasings, _sets(data["where"], f"{path}: where"), uses, category_uses, resolution, knowledge, words, purposes
    )


def _knowledge(table: dict, uses: set[str], where: str) -> dict[str, tuple[str, ...]]:
    """Every use's facts: a list of sentences, each about ``{a_name}`` or ``{A_name}`` and no other slot."""
    if set(table) != uses:
        missing, unknown = sorted(uses - set(table)), sorted(set(table) - uses)
        raise ValueError(f"{where}: needs exactly the uses (missing {missing}, unknown {unknown})")
    out = {}
    for use, sentences in table.items():
        if not isinstance(sentences, list) or not sentences:
            raise ValueError(f"{where}: {use!r} needs a list of sentences")
        for sentence in sentences:
            try:
                fields = [(field, spec, conv) for _, field, spec, conv in Formatter().parse(str(sentence)) if field]
            except ValueError as exc:  # a stray brace
                raise ValueError(f"{where}: {use!r}: {sentence!r}: {exc}") from None
            if not fields or any(f not in ("a_name", "A_name") or spec or conv for f, spec, conv in fields):
                raise ValueError(
                    f"{where}: {use!r}: {sentence!r} must name the object as {{a_name}} or {{A_name}}, no other slot"
                )
        out[use] = tuple(str(s) for s in sentences)
    return out


def _purposes(table: dict, uses: set[str], where: str) -> dict[str, tuple[str, ...]]:
    """Per use (any of them), a list of base-form phrases with no slot: "whip cream"."""
    unknown = sorted(set(table) - uses)
    if unknown:
        raise ValueError(f"{where}: unknown uses {unknown}")
    out = {}
    for use, phrases in table.items():
        if not isinstance(phrases, list) or not all(isinstance(p, str) and p.strip() for p in phrases):
            raise ValueError(f"{where}: {use!r} needs a list of phrases")
        if any("{" in p or "}" in p or p != p.strip() or p.endswith(".") for p in phrases):
            raise ValueError(f'{where}: {use!r}: a purpose is a bare phrase ("whip cream"), no slot or full stop')
        out[use] = tuple(phrases)
    return out


def _words(items, where: str) -> tuple[str, ...]:
    """The request words' facts: a list of sentences."""
    if not isinstance(items, list) or not all(isinstance(w, str) and w.strip() for w in items):
        raise ValueError(f"{where}: needs a list of sentences")
    return tuple(items)


def resolution(kind: str, a_name: str, facts: dict) -> str:
    """The sentence an RT answer opens with: which object the instruction of ``kind`` resolved to ("The one on
    the left is a bottle."), from what singled it out (``facts``: see ``Instruction.facts``)."""
    ref = load_referring()
    if kind not in ref.resolution:
        raise ValueError(f"no resolution for instruction kind {kind!r}")
    thing = ref.uses[facts["use"]]["train"][0] if kind == "function" else ""
    where = ref.where[facts["relation"]]["train"][0] if kind == "spatial" else ""
    return ref.resolution[kind].format(
        a_name=a_name,
        A_name=a_name[:1].upper() + a_name[1:],
        word=facts.get("word", ""),
        where=where,
        thing=thing,
        Thing=thing[:1].upper() + thing[1:],
    )


def scene_instructions(
    objects: list[dict], image_id: str, rng: random.Random, phrasing: str, absent_pool: tuple[str, ...]
) -> list[dict]:
    """The instructions of one scene, one per kind that can single out an object (``absent`` names a
    category of ``absent_pool`` that is not on the table). ``objects`` are the scene's rows
    (``category``, ``colour``, ``size``, ``position``)."""
    if phrasing not in PHRASING_SETS:
        raise ValueError(f"phrasing must be one of {PHRASING_SETS}, got {phrasing!r}")
    ref = load_referring()
    out: list[dict] = []

    def frame(kind: str) -> str:
        return rng.choice(ref.phrasings[kind][phrasing])

    def add(kind: str, text: str, target: int | None, **extra) -> None:
        out.append({"id": f"{image_id}-{len(out)}", "image": image_id, "text": text, "kind": kind, "target": target})
        out[-1].update(extra)

    counts = Counter(o["category"] for o in objects)
    if len(objects) == 1:
        add("generic", frame("generic"), 0)
    named = [k for k, o in enumerate(objects) if counts[o["category"]] == 1]
    if named:
        k = rng.choice(named)
        add("name", frame("name").format(object=objects[k]["category"]), k)
    attribute = _attribute_candidates(objects, counts)
    if attribute:
        k, slot, word = rng.choice(attribute)
        add("attribute", frame(slot).format(object=objects[k]["category"], **{slot: word}), k, slot=slot, word=word)
    spatial = _spatial_candidates(objects, counts)
    if spatial:
        k, relation, noun = rng.choice(spatial)
        where = rng.choice(ref.where[relation][phrasing])
        add("spatial", frame("spatial").format(object=noun, where=where), k, relation=relation, noun=noun)
    function = _function_candidates(objects, ref.category_uses)
    if function:
        k, use = rng.choice(function)
        add("function", frame("function").format(thing=rng.choice(ref.uses[use][phrasing])), k, use=use)
    pool = [c for c in absent_pool if c not in counts]
    if pool:
        missing = rng.choice(pool)
        add("absent", frame("name").format(object=missing), None, object=missing)
    return out


def _attribute_candidates(objects: list[dict], counts: Counter) -> list[tuple[int, str, str]]:
    """(object, slot, word) for every colour or size that singles an object out among its category;
    those needed to tell two of a category apart first, when there are any."""
    needed, plain = [], []
    for k, o in enumerate(objects):
        peers = [p for j, p in enumerate(objects) if j != k and p["category"] == o["category"]]
        bucket = needed if peers else plain
        if o["colour"] and all(p["colour"] and p["colour"] != o["colour"] for p in peers):
            bucket.append((k, "colour", o["colour"]))
        if peers:
            two = len(peers) == 1
            if o["size"] > SIZE_RATIO * max(p["size"] for p in peers):
                needed.append((k, "size", "larger" if two else "largest"))
            if o["size"] * SIZE_RATIO < min(p["size"] for p in peers):
                needed.append((k, "size", "smaller" if two else "smallest"))
    return needed or plain


def _spatial_candidates(objects: list[dict], counts: Counter) -> list[tuple[int, str, str]]:
    """(object, relation, noun) for every object that leads its scope (its category when there are two
    or more of it, else the whole table) in a relation by SPATIAL_MARGIN; category scopes first."""
    by_category, by_table = [], []
    scopes = [(c, [k for k, o in enumerate(objects) if o["category"] == c]) for c in counts if counts[c] > 1]
    if len(objects) > 1:
        scopes.append(("object", list(range(len(objects)))))
    for noun, members in scopes:
        for relation, (axis, sign) in RELATIONS.items():
            ranked = sorted(members, key=lambda k: -sign * objects[k]["position"][axis])
            lead = sign * (objects[ranked[0]]["position"][axis] - objects[ranked[1]]["position"][axis])
            if lead >= SPATIAL_MARGIN:
                (by_table if noun == "object" else by_category).append((ranked[0], relation, noun))
    return by_category or by_table


def _function_candidates(objects: list[dict], category_uses: dict) -> list[tuple[int, str]]:
    """(object, use) for every use exactly one object on the table has."""
    holders: dict[str, list[int]] = {}
    for k, o in enumerate(objects):
        for use in category_uses.get(o["category"], ()):
            holders.setdefault(use, []).append(k)
    return sorted((ks[0], use) for use, ks in holders.items() if len(ks) == 1)
