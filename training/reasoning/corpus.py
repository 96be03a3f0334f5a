"""The text corpus our tiny language model and its tokenizer learn from.

Everything the model will ever read or write: reasoning phrasings of every
category, instructions and refinement requests filled with every synonym and
part, what each object is for in everyday words (``referring.yaml``'s
``knowledge`` and ``words``: the stand-in for what a pretrained language model
knows), and pose answers in all three variants. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from appliance.answer import AnswerFormat, AnswerVariant
from appliance.grasp import GraspPose

from .referring import load_referring, resolution
from .refine import SIDES
from .templates import Templates

KNOWLEDGE_REPEATS = 64
"""How often the corpus holds each knowledge sentence (about a third of its lines). With 8, the pipeline's 300
language steps left 3 of 133 facts recalled; with 64, 86-87 (two seeds; bench/results/knowledge-probe)."""

PURPOSE_FORMS = False
"""Whether the knowledge states each use's purposes in every wording of ``referring.PURPOSE_FORMS`` as well."""


def corpus(
    templates: Templates,
    seed: int = 0,
    poses: int = 2000,
    decimals: tuple[int, ...] = (2, 3),
    knowledge: int = KNOWLEDGE_REPEATS,
    purpose_forms: bool = PURPOSE_FORMS,
    leave_out: frozenset[str] = frozenset(),
) -> Iterator[str]:
    """Yield corpus lines: all template text, what things are for (``knowledge`` times each; 0: none; with
    ``purpose_forms`` every purpose in each wording of ``referring.PURPOSE_FORMS`` too), then ``poses`` random
    answers per variant and precision. ``leave_out``: use phrasings no referring instruction is filled with (a
    probe's validation set)."""
    rng = random.Random(seed)
    categories = list(templates.categories.values()) + [templates.fallback]
    for category in categories:
        yield from templates.reasoning_phrasings(category)
        for synonym in category.synonyms:
            for template in templates.instructions["object"]:
                yield template.format(object=synonym)
            for part in category.grasp_at:
                for template in templates.instructions["part"] + templates.refinement["part"]:
                    yield template.format(object=synonym, part=part)
    yield from templates.instructions["generic"]
    yield from templates.refinement["rotate"]
    for side in SIDES:
        for template in templates.refinement["side"]:
            yield template.format(side=side)
    for kind, text in templates.refinement_reasoning.items():
        for _ in range(20):
            category = rng.choice(categories)
            before, after = rng.uniform(-1.57, 1.57), rng.uniform(-1.57, 1.57)
            words = dict(part=rng.choice(category.parts), side=rng.choice(sorted(SIDES)), object=category.name,
                         name=category.name, axis=rng.choice("xy"), before=f"{before:.2f}", after=f"{after:.2f}")  # fmt: skip
            yield text.format(**words)
            yield rng.choice(templates.refinement[kind]).format(**words)
    yield from referring_lines(categories, rng, leave_out=leave_out)
    facts = list(knowledge_lines(categories, purpose_forms)) if knowledge else []
    for _ in range(knowledge):
        yield from facts
    for variant in AnswerVariant:
        for d in decimals:
            fmt = AnswerFormat(variant, d)
            for _ in range(poses):
                pose = GraspPose(rng.random(), rng.random(), rng.uniform(-1.57, 1.57))
                yield fmt.render_pose(pose)


def referring_lines(
    categories, rng: random.Random, per_frame: int = 6, leave_out: frozenset[str] = frozenset()
) -> Iterator[str]:
    """Referring instructions (train phrasings only: the test set stays unseen; nor those in ``leave_out``), filled
    with random categories, colours, places and uses, and the resolutions answers open with, each naming a use its
    object has."""
    from appliance.sim.clutter import HUE_WORDS

    ref = load_referring()
    colours = sorted({w for _, _, w in HUE_WORDS})
    for sets in ref.phrasings.values():
        for frame in sets["train"]:
            for _ in range(per_frame):
                category = rng.choice(categories)
                where = rng.choice(ref.where[rng.choice(sorted(ref.where))]["train"])
                use = rng.choice(sorted(ref.uses))
                things = [t for t in ref.uses[use]["train"] if t not in leave_out]
                if not things:
                    raise ValueError(f"leave_out holds every train phrasing of the use {use!r}")
                thing = rng.choice(things)
                size = rng.choice(["larger", "smaller", "largest", "smallest"])
                yield frame.format(
                    object=category.name, colour=rng.choice(colours), size=size, where=where, thing=thing
                )
    for _ in range(200):
        category = rng.choice(categories)
        uses = ref.category_uses.get(category.name)
        facts = {
            "word": rng.choice(colours),
            "relation": rng.choice(sorted(ref.where)),
            "use": rng.choice(uses) if uses else None,  # a use the object has: the corpus states no false use
        }
        kinds = sorted(k for k in ref.resolution if k != "generic" and (uses or k != "function"))
        yield resolution(rng.choice(kinds), category.a_name, facts)


def knowledge_lines(categories, purpose_forms: bool = PURPOSE_FORMS) -> Iterator[str]:
    """What each category is for, in everyday words (``referring.yaml``'s ``knowledge``, and with
    ``purpose_forms`` its ``purposes`` in every wording), and what the words of everyday requests mean: the facts a
    pretrained language model brings and our tiny one reads here."""
    ref = load_referring()
    for category in categories:
        for use in ref.category_uses.get(category.name, ()):
            yield from ref.facts(use, category.a_name, purpose_forms)
    yield from ref.words


def fingerprint(seed: int = 0) -> str:
    """The MD5 of the corpus the tokenizer and the language stage read (``corpus(seed=seed)``): a carry of trained
    stages is only taken up by a checkout whose corpus is the same (scripts/device_build)."""
    import hashlib

    from .templates import load_templates

    return hashlib.md5("\n".join(corpus(load_templates(), seed=seed)).encode()).hexdigest()
