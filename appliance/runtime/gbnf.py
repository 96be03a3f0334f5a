"""A small GBNF reader: validate a grammar before llama.cpp sees it, and match text against it.

llama.cpp crashes on some malformed grammars, so every grammar goes through
``parse_grammar`` first (syntax, undefined rules, a ``root`` rule). ``matches``
tells whether a whole string is in the grammar's language — what tests use to
check that every rendered answer is accepted. Supported: rules ``name ::=``,
``|`` alternatives, string literals, character classes with ranges and ``^``,
groups, ``* + ?`` and ``{m}``/``{m,n}`` repetition, ``#`` comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_RULE_START = re.compile(r"([a-zA-Z][a-zA-Z0-9-]*)\s*::=")
_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-", "^": "^"}


class GrammarError(ValueError):
    """A grammar llama.cpp must not be given; the message says where and why."""


@dataclass(frozen=True)
class Grammar:
    """A parsed grammar: rule name → node tree (tuples, see ``_Parser``)."""

    rules: dict

    def matches(self, text: str, rule: str = "root") -> bool:
        """Whether the whole of ``text`` is derived by ``rule``."""
        return len(text) in _Matcher(self.rules, text).ends(("ref", rule), 0)


def parse_grammar(source: str) -> Grammar:
    """Parse and check a GBNF grammar; ``GrammarError`` on anything llama.cpp could choke on."""
    if not isinstance(source, str) or not source.strip():
        raise GrammarError("empty grammar")
    if "\x00" in source:
        raise GrammarError("grammar contains a NUL byte")
    rules = _Parser(source).parse()
    if "root" not in rules:
        raise GrammarError("no 'root' rule")
    for name, node in rules.items():
        for ref in _references(node):
            if ref not in rules:
                raise GrammarError(f"rule {name!r} refers to undefined rule {ref!r}")
    return Grammar(rules)


def _references(node):
    if node[0] == "ref":
        yield node[1]
    elif node[0] in ("seq", "alt"):
        for child in node[1]:
            yield from _references(child)
    elif node[0] == "rep":
        yield from _references(node[1])


class _Parser:
    """Recursive descent over the source, following llama.cpp's rules: a rule ends at a newline
    unless inside parentheses or right after ``|``. Nodes: ("lit", s), ("class", ranges, negated),
    ("ref", name), ("seq", [nodes]), ("alt", [nodes]), ("rep", node, min, max|None)."""

    def __init__(self, source: str):
        self.src = source
        self.pos = 0

    def parse(self) -> dict:
        rules = {}
        self._skip(newlines=True)
        while self.pos < len(self.src):
            match = _RULE_START.match(self.src, self.pos)
            if not match:
                raise self._error("expected 'name ::='")
            name = match.group(1)
            if name in rules:
                raise self._error(f"rule {name!r} defined twice")
            self.pos = match.end()
            self._skip(newlines=True)
            rules[name] = self._alternatives(nested=False)
            if self.pos < len(self.src) and self.src[self.pos] not in "\r\n":
                raise self._error("expected the end of the line")
            self._skip(newlines=True)
        return rules

    def _error(self, reason: str) -> GrammarError:
        line = self.src.count("\n", 0, self.pos) + 1
        return GrammarError(f"line {line}: {reason} at {self.src[self.pos : self.pos + 20]!r}")

    def _skip(self, newlines: bool) -> None:
        """Skip blanks and comments; newlines too when ``newlines``."""
        blanks = " \t\r\n" if newlines else " \t"
        while self.pos < len(self.src):
            c = self.src[self.pos]
            if c == "#":
                while self.pos < len(self.src) and self.src[self.pos] != "\n":
                    self.pos += 1
            elif c in blanks:
                self.pos += 1
            else:
                break

    def _alternatives(self, nested: bool):
        options = [self._sequence(nested)]
        while self.pos < len(self.src) and self.src[self.pos] == "|":
            self.pos += 1
            self._skip(newlines=True)
            options.append(self._sequence(nested))
        return options[0] if len(options) == 1 else ("alt", tuple(options))

    def _sequence(self, nested: bool):
        items = []
        while True:
            self._skip(newlines=nested)
            if self.pos >= len(self.src) or self.src[self.pos] in "|)\r\n":
                break
            items.append(self._postfix(self._atom()))
        if not items:
            raise self._error("empty alternative")
        return items[0] if len(items) == 1 else ("seq", tuple(items))

    def _atom(self):
        c = self.src[self.pos]
        if c == '"':
            return ("lit", self._literal())
        if c == "[":
            return self._char_class()
        if c == "(":
            self.pos += 1
            node = self._alternatives(nested=True)
            self._skip(newlines=True)
            if self.pos >= len(self.src) or self.src[self.pos] != ")":
                raise self._error("unclosed '('")
            self.pos += 1
            return node
        match = _NAME.match(self.src, self.pos)
        if match:
            self.pos = match.end()
            return ("ref", match.group(0))
        raise self._error("unexpected character")

    def _postfix(self, node):
        while self.pos < len(self.src) and self.src[self.pos] in "*+?{":
            c = self.src[self.pos]
            if c == "{":
                match = re.compile(r"\{\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?\}").match(self.src, self.pos)
                if not match:
                    raise self._error("bad repetition")
                low = int(match.group(1))
                high = low if not match.group(2) else (int(match.group(3)) if match.group(3) else None)
                if high is not None and high < low:
                    raise self._error("repetition maximum below minimum")
                self.pos = match.end()
                node = ("rep", node, low, high)
            else:
                self.pos += 1
                node = ("rep", node, {"*": 0, "+": 1, "?": 0}[c], 1 if c == "?" else None)
        return node

    def _char(self) -> str:
        c = self.src[self.pos]
        if c == "\n":
            raise self._error("unterminated literal or class")
        if c != "\\":
            self.pos += 1
            return c
        nxt = self.src[self.pos + 1 : self.pos + 2]
        if nxt == "x":
            code = self.src[self.pos + 2 : self.pos + 4]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", code):
                raise self._error("bad \\x escape")
            self.pos += 4
            return chr(int(code, 16))
        if nxt in _ESCAPES:
            self.pos += 2
            return _ESCAPES[nxt]
        raise self._error("unknown escape")

    def _literal(self) -> str:
        self.pos += 1
        out = []
        while self.pos < len(self.src) and self.src[self.pos] != '"':
            out.append(self._char())
        if self.pos >= len(self.src):
            raise self._error("unterminated string")
        self.pos += 1
        return "".join(out)

    def _char_class(self):
        self.pos += 1
        negated = self.src.startswith("^", self.pos)
        self.pos += negated
        ranges = []
        while self.pos < len(self.src) and self.src[self.pos] != "]":
            low = self._char()
            high = low
            if self.src.startswith("-", self.pos) and self.src[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self._char()
            if high < low:
                raise self._error("reversed range in character class")
            ranges.append((low, high))
        if self.pos >= len(self.src):
            raise self._error("unterminated character class")
        self.pos += 1
        if not ranges:
            raise self._error("empty character class")
        return ("class", tuple(ranges), negated)


class _Matcher:
    """Set-of-end-positions matcher, memoised per (node, start). Grammars here have no left recursion."""

    def __init__(self, rules: dict, text: str):
        self.rules, self.text = rules, text
        self.ends = lru_cache(maxsize=None)(self._ends)

    def _ends(self, node, start: int) -> frozenset:
        kind, text = node[0], self.text
        if kind == "lit":
            return frozenset({start + len(node[1])}) if text.startswith(node[1], start) else frozenset()
        if kind == "class":
            if start >= len(text):
                return frozenset()
            inside = any(low <= text[start] <= high for low, high in node[1])
            return frozenset({start + 1}) if inside != node[2] else frozenset()
        if kind == "ref":
            return self.ends(self.rules[node[1]], start)
        if kind == "alt":
            return frozenset().union(*(self.ends(child, start) for child in node[1]))
        if kind == "seq":
            positions = frozenset({start})
            for child in node[1]:
                positions = frozenset().union(*(self.ends(child, p) for p in positions))
                if not positions:
                    break
            return positions
        return self._repeat(node, start)

    def _repeat(self, node, start: int) -> frozenset:
        _, child, low, high = node
        reached, frontier, result, count = {start}, {start}, set(), 0
        if low == 0:
            result.add(start)
        while frontier and (high is None or count < high):
            count += 1
            frontier = {e for p in frontier for e in self.ends(child, p) if e != p}
            if high is None:
                frontier -= reached
            reached |= frontier
            if count >= low:
                result |= frontier
        return frozenset(result)
