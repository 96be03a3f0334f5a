"""How a model sees images and writes answers: answer variant and decimals, input size, crop.

Written by the dataset builder as ``view.json``, copied into every checkpoint,
read by evaluation and (later) recorded in the bundle manifest, so a model is
always shown images the way it was trained and parsed the way it answers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

from appliance.answer import AnswerFormat
from appliance.hints import Knowledge, KnowledgeError, knowledge_from_mapping

VIEW_FILE = "view.json"
IMAGE = "<image>"
PROMPT_ORDERS = ("image", "instruction")
"""Where the image goes in the first turn: before the instruction (LLaVA-1.5's usual ``<image>\\n{instruction}``)
or after it (``{instruction}\\n<image>``, a form LLaVA-1.5's training data also holds), where every image token
can read what is asked. On the tiny model's cluttered scenes the order made no difference to which object the
decoder picked (bench/results/n-order), so image-first stays the default."""


def check_prompt_order(order: str) -> None:
    if order not in PROMPT_ORDERS:
        raise ValueError(f"prompt_order must be one of {PROMPT_ORDERS}, got {order!r}")


@dataclass(frozen=True)
class ModelView:
    """The answer contract and image preprocessing a model was trained with."""

    variant: str = "rt"
    decimals: int = 3
    size: int = 224
    crop: int | None = None
    refusals: bool = False
    """Trained to refuse instructions about absent objects (``build_dataset --absent-fraction``)."""
    prompt_order: str = "image"
    """``PROMPT_ORDERS``: what comes first in the first turn (a view.json without it is image-first)."""
    knowledge: dict | None = None
    """The hints' knowledge (``appliance.hints``, its YAML form): every first turn's instruction carries its hint
    ("… whip cream? Hint: a whisk."). None: no hints (a view.json without it has none)."""

    def __post_init__(self) -> None:
        check_prompt_order(self.prompt_order)
        if self.knowledge is not None:
            self.hints  # noqa: B018 - validates the table now, naming the bad entry

    @cached_property
    def hints(self) -> Knowledge | None:
        return None if self.knowledge is None else knowledge_from_mapping(self.knowledge)

    def instruction(self, text: str, hint_from: str | None = None) -> str:
        """The instruction as the model reads it in a first turn: with its hint when the view has knowledge
        (looked up with ``hint_from``, by default the instruction itself)."""
        return text if self.hints is None else text + self.hints.hint(text if hint_from is None else hint_from)

    def first_turn(self, instruction: str, hint_from: str | None = None) -> str:
        """The user's first message: the instruction (with its hint) and the image token, in this view's order."""
        return self._turn(self.instruction(instruction, hint_from))

    def _turn(self, text: str) -> str:
        return f"{IMAGE}\n{text}" if self.prompt_order == "image" else f"{text}\n{IMAGE}"

    @property
    def prompt_template(self) -> str:
        """The single-turn prompt as a format string with an ``{instruction}`` field (what the bundle records);
        the field takes ``instruction(text)``, hint included."""
        return f"USER: {self._turn('{instruction}')} ASSISTANT:"

    def prompt(self, instruction: str) -> str:
        """The single-turn prompt of one instruction, its hint included."""
        return self.prompt_template.format(instruction=self.instruction(instruction))

    @property
    def answer_format(self) -> AnswerFormat:
        return AnswerFormat(self.variant, self.decimals, self.refusals)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, directory: Path) -> ModelView:
        path = Path(directory) / VIEW_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the model directory does not say how it was trained")
        data = json.loads(path.read_text())
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        try:
            view = cls(**data)
        except KnowledgeError as exc:
            raise ValueError(f"{path}: knowledge: {exc}") from None
        AnswerFormat(view.variant, view.decimals)  # validates both
        return view
