"""Text that travels with a bundle: the speech vocabulary (``speech.yaml``: what a spoken instruction may
say), the reasoning corpus (``drafts.txt``: what speculative decoding drafts from) and the category names (the
manifest's ``categories``: which object a reasoning names).

Built from the same templates the reasoning-tuning data was: every instruction
and refinement sentence, every category name and synonym, every part and side.
The appliance turns it into a JSGF grammar for pocketsphinx (appliance.daemon.speech).
"""

from __future__ import annotations

from pathlib import Path

import yaml

SPEECH_FILE = "speech.yaml"


def vocabulary() -> dict:
    """Objects, parts, sides and sentences, from training/reasoning's templates."""
    from training.reasoning import load_templates
    from training.reasoning.refine import SIDES

    templates = load_templates()
    objects, parts = set(), set()
    for category in templates.categories.values():
        objects |= {category.name, *category.synonyms}
        parts |= set(category.parts) | set(category.grasp_at)
    sentences = [s for kind in templates.instructions.values() for s in kind]
    sentences += [s for kind in templates.refinement.values() for s in kind]
    return {"objects": sorted(objects), "parts": sorted(parts), "sides": sorted(SIDES), "sentences": sentences}


def categories() -> dict[str, str]:
    """Every category name and synonym → its category name (the manifest's ``categories``), from the same templates:
    how the appliance reads which object a reasoning names. The fallback ("object", "thing") names no category."""
    from training.reasoning import load_templates

    names: dict[str, str] = {}
    for category in load_templates().categories.values():
        for word in (category.name, *category.synonyms):
            if names.setdefault(word.lower(), category.name) != category.name:
                raise ValueError(f"{word!r} names both {names[word.lower()]!r} and {category.name!r}")
    return dict(sorted(names.items()))


DRAFTS_FILE = "drafts.txt"


def write_drafts(out: Path) -> Path:
    """Every reasoning phrasing of every category, a line each: what speculative decoding drafts from."""
    from training.reasoning import load_templates

    templates = load_templates()
    lines = sorted({p for c in templates.categories.values() for p in templates.reasoning_phrasings(c)})
    Path(out).write_text("\n".join(lines) + "\n")
    return Path(out)


def write_vocabulary(out: Path) -> Path:
    Path(out).write_text(yaml.safe_dump(vocabulary(), sort_keys=False, width=120))
    return Path(out)
