"""Load the category taxonomy and sentence templates (YAML beside this file) and fill them."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

HERE = Path(__file__).parent
CATEGORIES_FILE = HERE / "categories.yaml"
TEMPLATES_FILE = HERE / "templates.yaml"
CATEGORY_FIELDS = {"name", "synonyms", "shape", "parts", "grasp_at", "avoid", "strategy", "synthetic", "a_name"}
OPTIONAL_FIELDS = {"synthetic", "a_name"}


@dataclass(frozen=True)
class Category:
    """One object category: its words, shapes, parts and how it may be grasped."""

    name: str
    synonyms: tuple[str, ...]
    shape: tuple[str, ...]
    parts: tuple[str, ...]
    grasp_at: tuple[str, ...]
    avoid: tuple[str, ...]
    strategy: tuple[str, ...]
    synthetic: bool = False
    a_name: str = ""
    """The name with its article ("a mug", "a pair of scissors"); derived when empty."""

    def __post_init__(self) -> None:
        if not self.a_name:
            object.__setattr__(self, "a_name", f"{'an' if self.name[0] in 'aeiou' else 'a'} {self.name}")


@dataclass(frozen=True)
class Templates:
    """Every template the reasoning-tuning data is made of."""

    categories: dict[str, Category]
    fallback: Category
    reasoning: tuple[str, ...]
    instructions: dict[str, tuple[str, ...]]
    refinement: dict[str, tuple[str, ...]]
    refinement_reasoning: dict[str, str]

    def category(self, name: str | None) -> Category:
        """The category called ``name``; the fallback for None or unknown names."""
        return self.categories.get(name or "", self.fallback)

    def vocabulary(self) -> dict[str, str]:
        """Every category name and synonym → its category name: what a bundle's ``categories`` hold, how the
        appliance reads which object a text names. The fallback ("object", "thing") names no category."""
        names: dict[str, str] = {}
        for category in self.categories.values():
            for word in (category.name, *category.synonyms):
                if names.setdefault(word.lower(), category.name) != category.name:
                    raise ValueError(f"{word!r} names both {names[word.lower()]!r} and {category.name!r}")
        return dict(sorted(names.items()))

    def category_for(self, object_name: str | None) -> Category:
        """Map a dataset's object name ("white coffee mug") to a category by its longest synonym."""
        if not object_name:
            return self.fallback
        if object_name in self.categories:
            return self.categories[object_name]
        text = " " + re.sub(r"[^a-z0-9]+", " ", object_name.lower()) + " "
        best = max(
            ((len(s), c) for c in self.categories.values() for s in c.synonyms if f" {s} " in text),
            default=None,
            key=lambda pair: pair[0],
        )
        return best[1] if best else self.fallback

    def reasoning_phrasings(self, category: Category) -> list[str]:
        """Every reasoning text the templates can produce for a category."""
        return [
            _fill(frame, category, shape=shape, strategy=strategy)
            for frame in self.reasoning
            for shape in category.shape
            for strategy in category.strategy
        ]

    def reasoning_for(self, category: Category, rng: random.Random, part: str | None = None) -> str:
        """One reasoning text drawn at random; strategies naming ``part`` are preferred."""
        strategies = [s for s in category.strategy if part and part in s] or list(category.strategy)
        return _fill(
            rng.choice(self.reasoning), category, shape=rng.choice(category.shape), strategy=rng.choice(strategies)
        )

    def refinement_for(self, kind: str, category: Category, rng: random.Random, **words) -> tuple[str, str]:
        """The user's follow-up request and the reasoning an RT answer gives for it. ``words`` fill the
        templates' slots: part, side, name (another object), before, after and axis (the change stated)."""
        words = _Words(object=category.name, **words)  # a slot not given stays empty
        return rng.choice(self.refinement[kind]).format_map(words), self.refinement_reasoning[kind].format_map(words)

    def instruction_for(self, category: Category, rng: random.Random, part: str | None = None) -> str:
        """A user instruction: naming the part when given, else the object or nothing."""
        if part is not None:
            return rng.choice(self.instructions["part"]).format(object=rng.choice(category.synonyms), part=part)
        kind = "generic" if category is self.fallback or rng.random() < 0.2 else "object"
        return rng.choice(self.instructions[kind]).format(object=rng.choice(category.synonyms))


class _Words(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _fill(frame: str, category: Category, shape: str, strategy: str) -> str:
    return frame.format(
        name=category.name,
        a_name=category.a_name,
        shape=shape,
        strategy=strategy,
        Strategy=strategy[:1].upper() + strategy[1:],
    )


def _category(entry: dict, where: str) -> Category:
    unknown = set(entry) - CATEGORY_FIELDS
    missing = CATEGORY_FIELDS - OPTIONAL_FIELDS - set(entry)
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    values = {k: tuple(entry[k]) if isinstance(entry[k], list) else entry[k] for k in entry}
    category = Category(**values)
    if not category.shape or not category.strategy or not category.grasp_at or not category.synonyms:
        raise ValueError(f"{where}: shape, strategy, grasp_at and synonyms must not be empty")
    return category


@cache
def load_templates(categories_file: Path = CATEGORIES_FILE, templates_file: Path = TEMPLATES_FILE) -> Templates:
    """Read and check both YAML files; errors name the file and the category."""
    cats = yaml.safe_load(Path(categories_file).read_text())
    texts = yaml.safe_load(Path(templates_file).read_text())
    categories = {}
    for i, entry in enumerate(cats["categories"]):
        category = _category(entry, f"{categories_file}: category {i} ({entry.get('name')})")
        if category.name in categories:
            raise ValueError(f"{categories_file}: category {category.name!r} defined twice")
        categories[category.name] = category
    return Templates(
        categories=categories,
        fallback=_category(cats["fallback"], f"{categories_file}: fallback"),
        reasoning=tuple(texts["reasoning"]),
        instructions={k: tuple(v) for k, v in texts["instructions"].items()},
        refinement={k: tuple(v) for k, v in texts["refinement"].items()},
        refinement_reasoning=dict(texts["refinement_reasoning"]),
    )
