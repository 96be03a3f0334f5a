"""The text corpus our tiny language model and its tokenizer learn from.

Everything the model will ever read or write: reasoning phrasings of every
category, instructions and refinement requests filled with every synonym and
part, and pose answers in all three variants. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from appliance.answer import AnswerFormat, AnswerVariant
from appliance.grasp import GraspPose

from .referring import load_referring, resolution
from .refine import SIDES
from .templates import Templates


def corpus(templates: Templates, seed: int = 0, poses: int = 2000, decimals: tuple[int, ...] = (2, 3)) -> Iterator[str]:
    """Yield corpus lines: all template text, then ``poses`` random answers per variant and precision."""
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
    yield from referring_lines(categories, rng)
    for variant in AnswerVariant:
        for d in decimals:
            fmt = AnswerFormat(variant, d)
            for _ in range(poses):
                pose = GraspPose(rng.random(), rng.random(), rng.uniform(-1.57, 1.57))
                yield fmt.render_pose(pose)


def referring_lines(categories, rng: random.Random, per_frame: int = 6) -> Iterator[str]:
    """Referring instructions (train phrasings only: the test set stays unseen) and the resolutions answers open
    with, filled with random categories, colours, places and uses."""
    from appliance.sim.clutter import HUE_WORDS

    ref = load_referring()
    colours = sorted({w for _, _, w in HUE_WORDS})
    for sets in ref.phrasings.values():
        for frame in sets["train"]:
            for _ in range(per_frame):
                category = rng.choice(categories)
                where = rng.choice(ref.where[rng.choice(sorted(ref.where))]["train"])
                thing = rng.choice(ref.uses[rng.choice(sorted(ref.uses))]["train"])
                size = rng.choice(["larger", "smaller", "largest", "smallest"])
                yield frame.format(
                    object=category.name, colour=rng.choice(colours), size=size, where=where, thing=thing
                )
    for _ in range(200):
        category = rng.choice(categories)
        facts = {
            "word": rng.choice(colours),
            "relation": rng.choice(sorted(ref.where)),
            "use": rng.choice(sorted(ref.uses)),
        }
        yield resolution(rng.choice(sorted(k for k in ref.resolution if k != "generic")), category.a_name, facts)
