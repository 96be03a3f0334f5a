"""The answer contract: how a grasp pose is written as text, read back, and constrained.

Three answer variants, as in the RT-Grasp paper:

- ``rt``   — reasoning sentences, then the pose: ``The object is a mug ... [0.512, 0.433], -0.785``
- ``nr-a`` — the pose alone: ``[0.512, 0.433], -0.785``
- ``nr-b`` — ``Grasp point coordinates: [0.512, 0.433] Rotation angle in radians: -0.785``

x, y are normalised image coordinates in [0, 1]; θ is radians in [−π/2, π/2)
(DESIGN.md). Any variant may instead refuse, when the instruction names nothing
in the picture: ``I see no banana here.`` (``REFUSAL``). Parsing a refusal
raises ``AnswerRefused``; the grammar allows it only for a format made with
``refusals=True`` (a bundle whose model was trained to refuse says so in its
manifest), so a model never taught it is never steered into it. The number of decimals is part of the contract and is recorded
in the bundle manifest. Training renders with ``AnswerFormat.render``; the
appliance parses with ``AnswerFormat.parse`` and constrains decoding with
``AnswerFormat.grammar`` (GBNF for llama.cpp). No torch, no I/O.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

from .grasp import GraspPose, wrap_angle

MAX_DECIMALS = 6
_NUMBER = r"(-?\d+(?:\.\d+)?)"


class AnswerVariant(str, Enum):
    """Which answer form the model was trained to produce."""

    RT = "rt"
    NR_A = "nr-a"
    NR_B = "nr-b"


# How each variant lays out the pose; the reasoning (RT only) comes before it.
POSE_TEMPLATES = {
    AnswerVariant.RT: "[{x}, {y}], {theta}",
    AnswerVariant.NR_A: "[{x}, {y}], {theta}",
    AnswerVariant.NR_B: "Grasp point coordinates: [{x}, {y}] Rotation angle in radians: {theta}",
}


REFUSAL = "I see no {object} here."
"""The answer to an instruction about something that is not in the picture."""
_REFUSAL_PATTERN = re.compile(r"I see no ([a-z][a-z' -]{0,40}) here\.")


class AnswerParseError(ValueError):
    """Model output that is not a valid answer; ``reason`` says what was wrong."""

    def __init__(self, reason: str, text: str):
        shown = text if len(text) <= 120 else text[:57] + " ... " + text[-58:]
        super().__init__(f"{reason}: {shown!r}")
        self.reason, self.text = reason, text


class AnswerRefused(AnswerParseError):
    """The model's answer is a refusal: it sees no such object. ``object`` is what it did not see."""

    def __init__(self, obj: str, text: str):
        super().__init__(f"refused: it sees no {obj} here", text)
        self.object = obj


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed answer: the pose and, for RT, the reasoning that preceded it."""

    pose: GraspPose
    reasoning: str = ""


@dataclass(frozen=True)
class AnswerFormat:
    """Render, parse and constrain answers of one variant with a fixed number of decimals."""

    variant: AnswerVariant = AnswerVariant.RT
    decimals: int = 3
    refusals: bool = False
    """Whether the model was trained to refuse (the grammar then allows ``REFUSAL``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", AnswerVariant(self.variant))
        if not 1 <= self.decimals <= MAX_DECIMALS:
            raise ValueError(f"decimals must be in 1..{MAX_DECIMALS}, got {self.decimals}")

    @property
    def _pose_pattern(self) -> re.Pattern:
        escaped = re.escape(POSE_TEMPLATES[self.variant])
        body = escaped.replace(r"\{x\}", _NUMBER).replace(r"\{y\}", _NUMBER).replace(r"\{theta\}", _NUMBER)
        body = body.replace(r"\ ", r"\s*")  # tolerate spacing differences, not wording
        return re.compile(body + r"\s*$")

    def render_pose(self, pose: GraspPose) -> str:
        """The pose part of the answer, with θ wrapped and every number rounded."""
        d = self.decimals
        return POSE_TEMPLATES[self.variant].format(
            x=f"{pose.x:.{d}f}", y=f"{pose.y:.{d}f}", theta=self.render_angle(pose.theta)
        )

    def render_angle(self, theta: float) -> str:
        """θ as the pose writes it: wrapped, rounded, never "-0.00"."""
        return _signed(wrap_angle(theta), self.decimals)

    def render(self, pose: GraspPose, reasoning: str = "") -> str:
        """The whole answer; RT requires reasoning, the NR variants refuse it."""
        reasoning = reasoning.strip()
        if self.variant is AnswerVariant.RT and not reasoning:
            raise ValueError("an RT answer needs reasoning text before the pose")
        if self.variant is not AnswerVariant.RT and reasoning:
            raise ValueError(f"a {self.variant.value} answer has no reasoning phase")
        if "[" in reasoning:
            raise ValueError("reasoning must not contain '[': it would be taken for the pose")
        pose_text = self.render_pose(pose)
        return f"{reasoning} {pose_text}" if reasoning else pose_text

    def render_refusal(self, obj: str) -> str:
        """The refusal for an instruction about ``obj``, which is not in the picture."""
        if not _REFUSAL_PATTERN.fullmatch(REFUSAL.format(object=obj)):
            raise ValueError(f"{obj!r} cannot be named in a refusal (lower-case words only)")
        return REFUSAL.format(object=obj)

    def parse(self, text: str) -> ParsedAnswer:
        """Read an answer back; ``AnswerParseError`` says what is wrong (``AnswerRefused`` for a refusal)."""
        if not isinstance(text, str):
            raise AnswerParseError(f"expected text, got {type(text).__name__}", repr(text))
        stripped = text.strip()
        if not stripped:
            raise AnswerParseError("empty answer", text)
        refusal = _REFUSAL_PATTERN.fullmatch(stripped)
        if refusal:
            raise AnswerRefused(refusal.group(1), text)
        match = self._pose_pattern.search(stripped)
        if match is None:
            raise AnswerParseError(f"no {self.variant.value} pose at the end of the answer", text)
        reasoning = stripped[: match.start()].strip()
        if self.variant is not AnswerVariant.RT and reasoning:
            raise AnswerParseError(f"unexpected text before the {self.variant.value} pose", text)
        if self.variant is AnswerVariant.RT and not reasoning:
            raise AnswerParseError("RT answer has no reasoning before the pose", text)
        x, y, theta = (float(v) for v in match.groups())
        return ParsedAnswer(self._checked_pose(x, y, theta, text), reasoning)

    def _checked_pose(self, x: float, y: float, theta: float, text: str) -> GraspPose:
        for name, value in (("x", x), ("y", y)):
            if not 0.0 <= value <= 1.0:
                raise AnswerParseError(f"{name} = {value} is outside [0, 1]", text)
        # Rendering rounds, so ±π/2 may come back as ±1.571: allow half a unit of the last decimal.
        limit = math.pi / 2 + 0.5 * 10.0**-self.decimals + 1e-12
        if not -limit <= theta <= limit:
            raise AnswerParseError(f"theta = {theta} is outside [-pi/2, pi/2)", text)
        return GraspPose(x, y, wrap_angle(theta))

    def grammar(self, refusal: bool = True, lead: str = "") -> str:
        """GBNF for llama.cpp: free reasoning (RT) without '[', then exactly one pose, then the end. The answer may
        open with a space: the model's first token carries the one after "ASSISTANT:" (``▁I``, ``▁[``), and a
        grammar without it would let only free reasoning begin, never a refusal or an NR pose as the model wrote it.
        A model trained to refuse may also refuse, unless ``refusal=False`` (something else found the object).
        ``lead``: an RT answer must open with this sentence ("The one on the left is a mug."), never refuse."""
        if lead and (self.variant is not AnswerVariant.RT or not lead.strip() or "[" in lead or not lead.isprintable()):
            raise ValueError(f"a lead is a sentence opening an RT answer, without '[': {lead!r}")
        refuses = self.refusals and refusal and not lead
        root = "reasoning pose" if self.variant is AnswerVariant.RT else "pose"
        if lead:
            root = f"{_gbnf_literal(lead.strip())} {root}"
        if refuses:
            root += " | refusal"
        rules = [f'root ::= " "? ({root})', *self._pose_rules()]
        if self.variant is AnswerVariant.RT:
            rules.append(r'reasoning ::= [^\[\x00-\x1f] [^\[\x00-\x1f]* " "')
        if refuses:
            head, tail = REFUSAL.split("{object}")
            rules.append(f"refusal ::= {_gbnf_literal(head)} [a-z] [a-z' -]* {_gbnf_literal(tail)}")
        return "\n".join(rules) + "\n"

    def pose_grammar(self, space_first: bool) -> str:
        """GBNF for the pose alone (after ``space_first`` a space): what the runtime switches to when the
        reasoning has used up its share of the token budget, so that every answer ends in a pose."""
        return (
            "\n".join([f"root ::= {_gbnf_literal(' ') + ' ' if space_first else ''}pose", *self._pose_rules()]) + "\n"
        )

    @property
    def longest_pose(self) -> str:
        """The longest pose text this format writes (for budgeting tokens)."""
        return POSE_TEMPLATES[self.variant].format(
            x=f"{1:.{self.decimals}f}", y=f"{1:.{self.decimals}f}", theta=f"-{math.pi / 2:.{self.decimals}f}"
        )

    def _pose_rules(self) -> list[str]:
        digits = " ".join(["[0-9]"] * self.decimals)
        zeros = "0" * self.decimals
        parts = re.split(r"(\{x\}|\{y\}|\{theta\})", POSE_TEMPLATES[self.variant])
        symbols = {"{x}": "unit", "{y}": "unit", "{theta}": "angle"}
        pose = " ".join(symbols.get(p) or _gbnf_literal(p) for p in parts if p)
        return [
            f"pose ::= {pose}",
            f'unit ::= "0." {digits} | "1.{zeros}"',
            # |θ| up to π/2 as rendered with these decimals, digit by digit: nothing the range check refuses.
            f'angle ::= "-"? ({_at_most(f"{math.pi / 2:.{self.decimals}f}")})',
        ]


def _signed(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    return "0." + "0" * decimals if float(text) == 0.0 else text  # never "-0.000"


def _at_most(limit: str) -> str:
    """GBNF for the decimal numbers written with exactly ``limit``'s digits that are <= ``limit`` (e.g. "1.571")."""
    head, rest = limit[0], limit[1:]
    if head == ".":
        return f'"." ({_at_most(rest)})' if rest else '"."'
    free = " ".join('"."' if c == "." else "[0-9]" for c in rest)
    options = []
    if head > "0":
        below = '"0"' if head == "1" else f"[0-{chr(ord(head) - 1)}]"
        options.append(f"{below} {free}".strip())
    options.append(f'"{head}" ({_at_most(rest)})' if rest else f'"{head}"')
    return " | ".join(options)


def _gbnf_literal(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
