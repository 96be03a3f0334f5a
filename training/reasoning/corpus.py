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
    for text in templates.refinement_reasoning.values():
        category = rng.choice(categories)
        yield text.format(part=rng.choice(category.parts), side=rng.choice(sorted(SIDES)), object=category.name)
    for variant in AnswerVariant:
        for d in decimals:
            fmt = AnswerFormat(variant, d)
            for _ in range(poses):
                pose = GraspPose(rng.random(), rng.random(), rng.uniform(-1.57, 1.57))
                yield fmt.render_pose(pose)
