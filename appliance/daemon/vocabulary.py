"""The words a bundle's model knows (its ``speech.yaml``), and whether an instruction uses them.

    vocab = Vocabulary.load(bundle / manifest.speech)
    why = not_understood("zzzz qqqq xxxx", vocab)   # -> "no word of it is one the model knows"

The model should refuse what it cannot ground ("I see no banana here": the
refusal answer of ``appliance.answer``). Until a bundle's model was trained to,
this check on the instruction's words stands in, before anything moves: an
instruction is understood when at least half of its words, and at least one
word that is not a function word ("the", "by", ...), are words of the
sentences, objects, parts and sides the model was trained on. It catches
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


class VocabularyError(ValueError):
    """A speech.yaml that is not a vocabulary."""


@dataclass(frozen=True)
class Vocabulary:
    """The sentences and names the model was trained on (lower case, no punctuation)."""

    objects: tuple[str, ...]
    parts: tuple[str, ...]
    sides: tuple[str, ...]
    sentences: tuple[str, ...]
    """With ``{object}``, ``{part}``, ``{side}`` slots."""

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        data = yaml.safe_load(Path(path).read_text())
        try:
            return cls(*(tuple(data[k]) for k in ("objects", "parts", "sides", "sentences")))
        except (KeyError, TypeError) as exc:
            raise VocabularyError(f"{path}: not a speech vocabulary ({exc})") from exc

    @cached_property
    def words(self) -> frozenset[str]:
        """Every word of every phrase and sentence (slots left out)."""
        phrases = (*self.objects, *self.parts, *self.sides, *(re.sub(r"\{\w+\}", " ", s) for s in self.sentences))
        return frozenset(w for phrase in phrases for w in normalise(phrase).split())


def normalise(text: str) -> str:
    """Lower case, words only: the form a recogniser returns."""
    text = text.lower().replace("90", "ninety")
    return " ".join(re.findall(r"[a-z{}']+", text))


def not_understood(text: str, vocab: Vocabulary) -> str | None:
    """Why the model cannot ground ``text`` (None when it may: see the module's docstring for the rule)."""
    words = normalise(text).replace("{", " ").replace("}", " ").split()
    if not words:
        return "it holds no word"
    known = vocab.words
    hits = [w for w in words if w in known]
    if not any(w not in FUNCTION_WORDS for w in hits):
        return "no word of it names an object, a part or a motion the model knows"
    if len(hits) < MIN_KNOWN * len(words):
        unknown = sorted({w for w in words if w not in known})
        return f"most of its words are unknown to the model ({', '.join(unknown[:8])})"
    return None
