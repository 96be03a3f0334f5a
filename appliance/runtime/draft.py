"""Draft tokens for speculative decoding, looked up from text the answer is likely to repeat.

An RT answer's reasoning comes from a known corpus (the bundle's ``drafts.txt``:
every reasoning phrasing the model was tuned on) and often repeats the
conversation. ``NgramDrafter`` indexes the corpus's token n-grams; given the
tokens so far it finds the longest suffix (``max_n`` down to ``min_n`` tokens)
seen before and proposes the tokens that followed it. The model then checks the
whole draft in one batch and keeps the prefix it agrees with, so the output is
exactly plain greedy decoding's — only faster when the drafts are right.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class NgramDrafter:
    """n-gram → continuation lookup over a corpus of token sequences."""

    def __init__(self, sequences: Iterable[Sequence[int]], max_n: int = 4, min_n: int = 2, k: int = 10):
        if not 1 <= min_n <= max_n or k < 1:
            raise ValueError("need 1 <= min_n <= max_n and k >= 1")
        self.max_n, self.min_n, self.k = max_n, min_n, k
        self.index: dict[tuple[int, ...], tuple[int, ...]] = {}
        for seq in sequences:
            self.add(seq)

    def add(self, seq: Sequence[int]) -> None:
        """Index one sequence (the first continuation of an n-gram wins: it is the most common phrasing first)."""
        seq = tuple(seq)
        for n in range(self.min_n, self.max_n + 1):
            for i in range(len(seq) - n):
                self.index.setdefault(seq[i : i + n], seq[i + n : i + n + self.k])

    def draft(self, tokens: Sequence[int], context: Sequence[int] = ()) -> list[int]:
        """Up to ``k`` tokens likely to follow ``tokens``: from the corpus, else from ``context`` (the conversation)."""
        for n in range(min(self.max_n, len(tokens)), self.min_n - 1, -1):
            key = tuple(tokens[-n:])
            found = self.index.get(key)
            if found:
                return list(found)
            found = _in_context(key, context, self.k)
            if found:
                return found
        return []


def _in_context(key: tuple[int, ...], context: Sequence[int], k: int) -> list[int]:
    """The tokens after the latest earlier occurrence of ``key`` in ``context``."""
    n = len(key)
    for i in range(len(context) - n - 1, -1, -1):
        if tuple(context[i : i + n]) == key:
            return list(context[i + n : i + n + k])
    return []
