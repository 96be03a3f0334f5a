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
SIZE_WORDS = ("smaller", "larger", "smallest", "largest")
"""The size words of training.reasoning.referring (two of a category: -er; three or more: -est)."""


def referring_vocabulary() -> dict:
    """The referring phrasings of cluttered scenes (training/reasoning/referring.yaml, train and test sets: speech
    must cover what people say, not only what a model was trained on), with their slots' words: colours,
    sizes, spatial phrases (``where``) and uses' noun phrases (``things``)."""
    from appliance.sim.clutter import HUE_WORDS
    from training.reasoning.referring import PHRASING_SETS, load_referring

    referring = load_referring()

    def every(table) -> list[str]:
        return sorted({p for sets in table.values() for name in PHRASING_SETS for p in sets[name]})

    return {
        "colours": sorted({word for *_, word in HUE_WORDS}),
        "sizes": list(SIZE_WORDS),
        "where": every(referring.where),
        "things": every(referring.uses),
        "sentences": [s for sets in referring.phrasings.values() for name in PHRASING_SETS for s in sets[name]],
    }


def vocabulary() -> dict:
    """Objects, parts, sides and sentences, from training/reasoning's templates, and the referring phrasings."""
    from training.reasoning import load_templates
    from training.reasoning.refine import SIDES

    templates = load_templates()
    objects, parts = set(), set()
    for category in templates.categories.values():
        objects |= {category.name, *category.synonyms}
        parts |= set(category.parts) | set(category.grasp_at)
    sentences = [s for kind in templates.instructions.values() for s in kind]
    sentences += [s for kind in templates.refinement.values() for s in kind]
    referring = referring_vocabulary()
    sentences += [s for s in referring.pop("sentences") if s not in sentences]
    return {
        "objects": sorted(objects),
        "parts": sorted(parts),
        "sides": sorted(SIDES),
        **referring,
        "sentences": sentences,
    }


def categories() -> dict[str, str]:
    """Every category name and synonym → its category name (the manifest's ``categories``), from the same templates:
    how the appliance reads which object a reasoning names (``Templates.vocabulary``)."""
    from training.reasoning import load_templates

    return load_templates().vocabulary()


DRAFTS_FILE = "drafts.txt"


def write_drafts(out: Path) -> Path:
    """Every reasoning phrasing of every category, a line each: what speculative decoding drafts from."""
    from training.reasoning import load_templates

    templates = load_templates()
    lines = sorted({p for c in templates.categories.values() for p in templates.reasoning_phrasings(c)})
    Path(out).write_text("\n".join(lines) + "\n")
    return Path(out)


def write_vocabulary(out: Path, data: dict | None = None) -> Path:
    """``speech.yaml`` of a bundle (or ``data`` in its format)."""
    Path(out).write_text(yaml.safe_dump(vocabulary() if data is None else data, sort_keys=False, width=120))
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    """Write the appliance's default referring vocabulary (for bundles whose speech.yaml predates it)."""
    import argparse

    from appliance.daemon.vocabulary import REFERRING_DEFAULTS

    parser = argparse.ArgumentParser(
        prog="python -m export.speech",
        description="Write the referring phrasings and their words (training/reasoning/referring.yaml) as the "
        "appliance's defaults for bundles whose speech.yaml lacks them.",
        epilog="example: python -m export.speech --referring-defaults appliance/daemon/referring_speech.yaml",
    )
    parser.add_argument("--referring-defaults", type=Path, default=REFERRING_DEFAULTS, help="where to write them")
    args = parser.parse_args(argv)
    write_vocabulary(args.referring_defaults, referring_vocabulary())
    print(f"wrote {args.referring_defaults}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
