"""Hints: which objects the knowledge says an instruction's words are for.

"could you pass me a thing to whip cream?" must reach the whisk. A pretrained LLM knows what a whisk is for; the
demo model, trained from nothing, only knows what it read. The knowledge (a table of uses: the words that point
to each use, and the objects that serve it) is looked up with the instruction's words, and the objects of the
best use are appended to the first turn: ``… whip cream? Hint: a whisk.`` The model was trained with the same
hints on every first instruction.

Where the instruction names its object ("pick up the box", "the red mug on the left"), the name counts for nothing
in the lookup (``names``): the instruction already says which object, and the knowledge must not point elsewhere
("the box" would find the tape roll, "something to seal a box with"), least of all when that object is absent
and the answer is a refusal. A use's own words may still hold a name ("seal a box": the box is left out, "seal"
finds the tape roll).

The lookup is plain lexical retrieval (BM25 over stemmed words; the frame words in ``ignore`` never count), so
a user teaches the appliance a new use by adding a row to the bundle's ``knowledge.yaml``, without retraining:

    uses:
      whip:
        words: ["People whip cream with a whisk.", "something to beat eggs with"]
        objects: ["a whisk"]
    names: ["whisk", "egg beater", "mug", ...]   # optional: what names an object

No torch: training renders hints with the same ``Knowledge`` the bundle carries (``load_knowledge`` reads it).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HINT = " Hint: {objects}."
"""Appended to the first turn's instruction when the knowledge points to a use."""
MAX_OBJECTS = 6
"""A use (or a tie of uses) with more objects than this says too little to be a hint."""
K1, B = 1.2, 0.75
"""BM25's term-frequency saturation and length normalisation (the usual values)."""
STOP_WORDS = frozenset(
    "a an the to with from in into of on for and or it its is are be i me you your my can could would some "
    "something thing things that this one people their them what do".split()
)
_WORD = re.compile(r"[a-z]+")
DETERMINERS = {"the": True, "these": True, "those": True, "my": True, "your": True, "a": False, "an": False}
"""A name counts as naming the object wanted after one of these and at most two other words ('the red mug'),
none of them a stop word or one of ``MODALS`` ('a thing to lock with' names no padlock); in the plural too where
the value is True ('the boxes', not 'a boxes'). Not 'this' or 'that': 'the thing that covers a pot' is no cover."""
MODALS = frozenset("will would shall should may might must".split())


class KnowledgeError(ValueError):
    """The knowledge table is malformed; the message names the entry."""


def stem(word: str) -> str:
    """A crude English stem, the same for the forms a request and a fact use: 'cuts', 'cutting' → 'cut';
    'whipped' → 'whip'; 'write', 'writing' → 'writ'."""
    for suffix in ("ing", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouylsz":
        word = word[:-1]
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def terms(text: str, ignore: frozenset[str] = frozenset()) -> list[str]:
    """The stemmed content words of ``text``."""
    return [stem(w) for w in _WORD.findall(text.lower()) if len(w) > 1 and w not in STOP_WORDS and w not in ignore]


def listing(names: list[str]) -> str:
    """'a mug', 'a mug or a cup', 'a mug, a cup or a glass'."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def hint_text(objects: list[str]) -> str:
    """``" Hint: a knife or a pair of scissors."``, or ``""`` for no objects."""
    return HINT.format(objects=listing(objects)) if objects else ""


@dataclass(frozen=True)
class Knowledge:
    """Uses: the words that point to each (sentences or phrases) and the objects that serve it."""

    words: dict[str, tuple[str, ...]]
    objects: dict[str, tuple[str, ...]]
    ignore: frozenset[str] = frozenset()
    names: tuple[str, ...] = ()
    """What names an object ('mug', 'coffee mug'): left out of an instruction that says it after a determiner."""
    _index: dict[str, Counter] = field(init=False, repr=False, compare=False)
    _named: tuple[re.Pattern, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if set(self.words) != set(self.objects):
            raise KnowledgeError(f"uses without both words and objects: {sorted(set(self.words) ^ set(self.objects))}")
        index = {}
        for use in self.words:
            if not self.objects[use]:
                raise KnowledgeError(f"use {use!r}: no objects")
            index[use] = Counter(t for text in self.words[use] for t in terms(text, self.ignore))
            if not index[use]:
                raise KnowledgeError(f"use {use!r}: its words hold no word to look up")
        object.__setattr__(self, "_index", index)
        named = sorted({" ".join(_WORD.findall(n.lower())) for n in self.names} - {""}, key=len, reverse=True)
        patterns = []
        if named:
            alternatives = "|".join(re.escape(n).replace(r"\ ", "[^a-z]+") for n in named)
            # up to two words between, none of them a stop word: in "a thing to lock with" 'lock' is a verb
            gap = "|".join(sorted(STOP_WORDS | MODALS))
            between = rf"(?:[\s-]+(?!(?:{gap})\b)[a-z]+){{0,2}}?"
            for plural in (True, False):
                determiners = "|".join(d for d, p in DETERMINERS.items() if p == plural)
                ending = "(?:e?s)?" if plural else ""
                patterns.append(re.compile(rf"\b({determiners})({between})[\s-]+(?:{alternatives}){ending}\b"))
        object.__setattr__(self, "_named", tuple(patterns))

    def without_names(self, instruction: str) -> str:
        """The instruction, lower-cased, less every object name (or its plural) it says after a determiner: 'pick
        up the orange box' → 'pick up the'; 'a thing to tape with' keeps its verb."""
        text = instruction.lower()
        while self._named:  # 'the orange box': 'box' goes first, then 'orange' (a fruit's name too)
            shorter = text
            for pattern in self._named:
                shorter = pattern.sub(r"\1\2", shorter)
            if shorter == text:
                break
            text = shorter
        return text

    def scores(self, instruction: str) -> list[tuple[float, str]]:
        """BM25 of each use against the instruction's words, best first (ties in use order)."""
        query = set(terms(self.without_names(instruction), self.ignore))
        if not query or not self._index:
            return []
        n = len(self._index)
        mean_length = sum(sum(c.values()) for c in self._index.values()) / n
        df = Counter(t for c in self._index.values() for t in c)
        out = []
        for use, counts in self._index.items():
            length, score = sum(counts.values()), 0.0
            for t in query & counts.keys():
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                tf = counts[t]
                score += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / mean_length))
            out.append((score, use))
        return sorted(out, key=lambda s: -s[0])

    def objects_for(self, instruction: str) -> list[str]:
        """The objects of the best-scoring use (of every use tied with it), or none."""
        ranked = self.scores(instruction)
        if not ranked or ranked[0][0] <= 0:
            return []
        best = ranked[0][0]
        names: list[str] = []
        for score, use in ranked:
            if score < best * (1 - 1e-6):
                break
            names += [o for o in self.objects[use] if o not in names]
        return names if len(names) <= MAX_OBJECTS else []

    def hint(self, instruction: str) -> str:
        """The text appended to the first turn: ``" Hint: a whisk."``, or ``""`` when the knowledge says nothing."""
        return hint_text(self.objects_for(instruction))

    def to_mapping(self) -> dict:
        return {
            "ignore": sorted(self.ignore),
            "uses": {u: {"words": list(self.words[u]), "objects": list(self.objects[u])} for u in self.words},
            **({"names": list(self.names)} if self.names else {}),
        }


def knowledge_from_mapping(data) -> Knowledge:
    """A ``Knowledge`` from its YAML form (``to_mapping``); names the bad entry."""
    if not isinstance(data, dict) or not isinstance(data.get("uses"), dict):
        raise KnowledgeError("knowledge must be a mapping with a 'uses' table")
    unknown = set(data) - {"uses", "ignore", "names"}
    if unknown:
        raise KnowledgeError(f"unknown knowledge keys: {sorted(unknown)}")
    ignore = data.get("ignore", [])
    if not isinstance(ignore, list) or not all(isinstance(w, str) for w in ignore):
        raise KnowledgeError("'ignore' must be a list of words")
    names = data.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise KnowledgeError("'names' must be a list of object names")
    words, objects = {}, {}
    for use, entry in data["uses"].items():
        if not isinstance(entry, dict) or set(entry) != {"words", "objects"}:
            raise KnowledgeError(f"use {use!r}: needs exactly 'words' and 'objects'")
        for key, into in (("words", words), ("objects", objects)):
            value = entry[key]
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise KnowledgeError(f"use {use!r}: {key!r} must be a list of non-empty strings")
            into[str(use)] = tuple(value)
    return Knowledge(words, objects, frozenset(w.lower() for w in ignore), tuple(names))


def load_knowledge(path: Path) -> Knowledge:
    """A bundle's ``knowledge.yaml``; ``KnowledgeError`` names the file and the bad entry."""
    try:
        return knowledge_from_mapping(yaml.safe_load(Path(path).read_text()))
    except (OSError, yaml.YAMLError, KnowledgeError) as exc:
        raise KnowledgeError(f"{path}: {exc}") from None
