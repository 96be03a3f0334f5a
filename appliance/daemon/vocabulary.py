"""The words a bundle's model knows (its ``speech.yaml``), and whether an instruction uses them.

    vocab = Vocabulary.load(bundle / manifest.speech)
    why = not_understood("zzzz qqqq xxxx", vocab)   # -> "no word of it is one the model knows"

The model should refuse what it cannot ground ("I see no banana here": the
refusal answer of ``appliance.answer``). Until a bundle's model was trained to,
this check on the instruction's words stands in, before anything moves: an
instruction is understood when at least half of its words, and at least one
word that is not a function word ("the", "by", ...), are words of the
sentences, objects, parts and sides the model was trained on, or of the
referring words (colours, sizes, places; a use such as "something to cut
with" counts as a whole phrase, its everyday words alone do not). It catches
gibberish, emoji, an empty transcription and sentences about other things; it
does not catch a known word in a nonsensical order, nor (until [M]) an object
that is known but not on the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

FUNCTION_WORDS = frozenset(
    "a an the it its this that these those to of by at in on for from with me i you my your please now instead "
    "can could would should where how what is are be give get find".split()
)
"""Words that say nothing about what to grasp: an instruction of these alone is not understood."""
MIN_KNOWN = 0.5
REFERRING_DEFAULTS = Path(__file__).with_name("referring_speech.yaml")
"""The referring phrasings of cluttered scenes ("hand me something to cut with", "pick up the green mug",
"grab the ball on the left please") and their words, written by ``python -m export.speech`` from
training/reasoning/referring.yaml (a test checks they agree). A bundle's speech.yaml exported since has
them itself; an older one (models/rtgrasp-tiny) gets these, so what may be said is what may be typed."""
REFERRING_KEYS = ("colours", "sizes", "where", "things")
SLOTS = {
    "object": "objects",
    "name": "objects",  # the other object a follow-up asks for ("no, the bowl instead")
    "part": "parts",
    "side": "sides",
    "colour": "colours",
    "size": "sizes",
    "where": "where",
    "thing": "things",
}
"""The slots of a sentence (``{object}``, ...) and the field whose phrases fill each."""


class VocabularyError(ValueError):
    """A speech.yaml that is not a vocabulary."""


@dataclass(frozen=True)
class Vocabulary:
    """The sentences and names the model was trained on (lower case, no punctuation)."""

    objects: tuple[str, ...]
    parts: tuple[str, ...]
    sides: tuple[str, ...]
    sentences: tuple[str, ...]
    """With ``{object}``, ``{part}``, ``{side}``, ``{colour}``, ``{size}``, ``{where}``, ``{thing}`` slots."""
    colours: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    where: tuple[str, ...] = ()
    """Spatial phrases: "on the left", "nearest the robot"."""
    things: tuple[str, ...] = ()
    """What a use asks for: "something to cut with"."""

    @classmethod
    def load(cls, path: Path, defaults: Path | None = REFERRING_DEFAULTS) -> Vocabulary:
        """A bundle's speech.yaml; one without referring words gets those of ``defaults`` (None: none)."""
        data = yaml.safe_load(Path(path).read_text())
        try:
            base = {k: tuple(data[k]) for k in ("objects", "parts", "sides", "sentences")}
            referring = {k: tuple(data[k]) for k in REFERRING_KEYS if k in data}
        except (KeyError, TypeError) as exc:
            raise VocabularyError(f"{path}: not a speech vocabulary ({exc})") from exc
        if not referring and defaults is not None:
            extra = yaml.safe_load(Path(defaults).read_text())
            referring = {k: tuple(extra[k]) for k in REFERRING_KEYS}
            base["sentences"] += tuple(s for s in extra["sentences"] if s not in base["sentences"])
        return cls(**base, **referring)

    @cached_property
    def slots(self) -> dict[str, tuple[str, ...]]:
        """What fills each slot of a sentence: ``{"object": self.objects, ...}``."""
        return {name: getattr(self, field) for name, field in SLOTS.items()}

    @cached_property
    def words(self) -> frozenset[str]:
        """Every word of every phrase and sentence (slots left out), but for the uses' phrases: their everyday
        words (time, door, weather) would make sentences about other things look understood. A whole use
        phrase in an instruction counts (``not_understood``); the recogniser takes ``spoken_words``."""
        fillers = (p for name, values in self.slots.items() if name != "thing" for p in values)
        phrases = (*fillers, *(re.sub(r"\{\w+\}", " ", s) for s in self.sentences))
        return frozenset(w for phrase in phrases for w in normalise(phrase).split())

    @cached_property
    def spoken_words(self) -> frozenset[str]:
        """``words`` and every word of the uses' phrases: what a command the grammar allows may say."""
        return self.words | {w for phrase in self.things for w in normalise(phrase).split()}


USE = "<use>"
"""Stands for a whole use phrase found in an instruction ("something to cut with"): a known word."""


def normalise(text: str) -> str:
    """Lower case, words only: the form a recogniser returns."""
    text = text.lower().replace("90", "ninety")
    return " ".join(re.findall(r"[a-z{}']+", text))


def not_understood(text: str, vocab: Vocabulary) -> str | None:
    """Why the model cannot ground ``text`` (None when it may: see the module's docstring for the rule)."""
    words = normalise(text).replace("{", " ").replace("}", " ").split()
    if not words:
        return "it holds no word"
    spaced = f" {' '.join(words)} "
    for phrase in sorted((normalise(t) for t in vocab.things), key=len, reverse=True):
        spaced = spaced.replace(f" {phrase} ", f" {USE} ")
    words = spaced.split()
    known = vocab.words | {USE}
    hits = [w for w in words if w in known]
    if not any(w not in FUNCTION_WORDS for w in hits):
        return "no word of it names an object, a part or a motion the model knows"
    if len(hits) < MIN_KNOWN * len(words):
        unknown = sorted({w for w in words if w not in known})
        return f"most of its words are unknown to the model ({', '.join(unknown[:8])})"
    return None
