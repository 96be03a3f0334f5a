"""How a model sees images and writes answers: answer variant and decimals, input size, crop.

Written by the dataset builder as ``view.json``, copied into every checkpoint,
read by evaluation and (later) recorded in the bundle manifest, so a model is
always shown images the way it was trained and parsed the way it answers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.answer import AnswerFormat

VIEW_FILE = "view.json"


@dataclass(frozen=True)
class ModelView:
    """The answer contract and image preprocessing a model was trained with."""

    variant: str = "rt"
    decimals: int = 3
    size: int = 224
    crop: int | None = None
    refusals: bool = False
    """Trained to refuse instructions about absent objects (``build_dataset --absent-fraction``)."""

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
        view = cls(**data)
        AnswerFormat(view.variant, view.decimals)  # validates both
        return view
