"""Referring instructions and per-object ground truth beside a grasp dataset.

``instructions.jsonl`` (one JSON object per line)::

    {"id": "pcd0003-1", "image": "pcd0003", "text": "pick up the red mug", "kind": "attribute", "target": 1}

``target`` is the index of the referred object in the image's scene (``pcdNNNNscene.json``), or null
for ``absent`` (the instruction names an object not on the table; ``object`` then says which).
A scene file lists the objects (category, colour word, size, position, grasp regions in pixels),
the object and part of each positive rectangle, and the segments of ``pcdNNNNmask.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from .files import DatasetFormatError, read_json
from .sample import GraspLabels, GraspSample

INSTRUCTIONS_FILE = "instructions.jsonl"
INSTRUCTION_KINDS = ("name", "attribute", "spatial", "function", "generic", "absent")
INSTRUCTION_KEYS = ("id", "image", "text", "kind", "target")
FACT_KEYS = ("slot", "word", "relation", "noun", "use")


@dataclass(frozen=True)
class Instruction:
    """One instruction about one image; ``target`` is None for ``absent`` (``object`` names what is absent)."""

    id: str
    image: str
    text: str
    kind: str
    target: int | None
    object: str | None = None
    facts: dict = field(default_factory=dict, compare=False)
    """What singled the target out, where the generator recorded it: ``slot`` and ``word`` (attribute),
    ``relation`` and ``noun`` (spatial), ``use`` (function). Training data states it in the reasoning."""


@dataclass(frozen=True)
class SceneTruth:
    """What the simulator knew about an image: objects with their regions (pixels), owners and parts of the
    positive rectangles, and the segment mask (value i + 1 is ``segments[i]``, an (object, part) pair)."""

    objects: tuple[dict, ...]
    positives: tuple[tuple[int, str], ...]
    segments: tuple[tuple[int, str], ...]
    mask: np.ndarray

    @property
    def has_regions(self) -> bool:
        """Whether the objects carry grasp regions (simulator truth) that the part-aware metric needs."""
        return any(o.get("regions") for o in self.objects)

    def object_mask(self, k: int) -> np.ndarray:
        """Pixels of object ``k``."""
        values = [i + 1 for i, (obj, _) in enumerate(self.segments) if obj == k]
        return np.isin(self.mask, values)

    def object_at(self, u: float, v: float) -> int | None:
        """The object seen at a pixel (None: the table or outside the image)."""
        h, w = self.mask.shape
        col, row = int(np.floor(u)), int(np.floor(v))
        if not (0 <= row < h and 0 <= col < w) or self.mask[row, col] == 0:
            return None
        return self.segments[self.mask[row, col] - 1][0]


def read_instructions(path: Path) -> list[Instruction]:
    """Parse ``instructions.jsonl``; a bad line raises ``DatasetFormatError`` naming file and line."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    out, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(path, f"not JSON ({exc.msg})", number) from None
        if not isinstance(row, dict) or any(k not in row for k in INSTRUCTION_KEYS):
            raise DatasetFormatError(path, f"expected an object with keys {list(INSTRUCTION_KEYS)}", number)
        if row["kind"] not in INSTRUCTION_KINDS:
            raise DatasetFormatError(
                path, f"unknown kind {row['kind']!r}; known: {', '.join(INSTRUCTION_KINDS)}", number
            )
        target = row["target"]
        if row["kind"] == "absent":
            if target is not None or not isinstance(row.get("object"), str):
                raise DatasetFormatError(path, "an absent instruction has target null and names its 'object'", number)
        elif not isinstance(target, int) or isinstance(target, bool) or target < 0:
            raise DatasetFormatError(path, f"target must be an object index (int >= 0), got {target!r}", number)
        if not all(isinstance(row[k], str) and row[k] for k in ("id", "image", "text")):
            raise DatasetFormatError(path, "id, image and text must be non-empty strings", number)
        if row["id"] in seen:
            raise DatasetFormatError(path, f"instruction id {row['id']!r} appears twice", number)
        seen.add(row["id"])
        facts = {k: row[k] for k in FACT_KEYS if isinstance(row.get(k), str)}
        out.append(Instruction(row["id"], row["image"], row["text"], row["kind"], target, row.get("object"), facts))
    return out


def read_scene(path: Path, mask_path: Path) -> SceneTruth:
    """Read ``pcdNNNNscene.json`` and its ``pcdNNNNmask.png``."""
    data = read_json(path)
    if not isinstance(data, dict) or any(k not in data for k in ("objects", "positives", "segments")):
        raise DatasetFormatError(path, "expected keys objects, positives and segments")
    try:
        with Image.open(mask_path) as img:
            mask = np.asarray(img)
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(mask_path, f"not a readable mask: {exc}") from exc
    segments = tuple((int(k), str(p)) for k, p in data["segments"])
    n = len(data["objects"])
    if any(not 0 <= k < n for k, _ in segments) or any(not 0 <= k < n for k, _ in data["positives"]):
        raise DatasetFormatError(path, f"an object index outside 0..{n - 1}")
    if mask.ndim != 2 or int(mask.max(initial=0)) > len(segments):
        raise DatasetFormatError(mask_path, f"expected one channel with values 0..{len(segments)}")
    return SceneTruth(tuple(data["objects"]), tuple((int(k), str(p)) for k, p in data["positives"]), segments, mask)


def target_labels(labels: GraspLabels, scene: SceneTruth, instruction: Instruction) -> GraspLabels:
    """The image's labels narrowed to the instruction's target: its positives and their parts (none for absent)."""
    if len(scene.positives) != len(labels.positives):
        raise ValueError(
            f"{labels.image_id}: scene lists {len(scene.positives)} positives, the labels {len(labels.positives)}"
        )
    if instruction.target is not None and instruction.target >= len(scene.objects):
        raise ValueError(
            f"instruction {instruction.id}: target {instruction.target} but {labels.image_id} "
            f"has {len(scene.objects)} objects"
        )
    keep = [i for i, (k, _) in enumerate(scene.positives) if k == instruction.target]
    target = scene.objects[instruction.target] if instruction.target is not None else None
    return replace(
        labels,
        positives=tuple(labels.positives[i] for i in keep),
        parts=tuple(scene.positives[i][1] for i in keep),
        object_id=target["object_id"] if target else None,
        object_name=target["category"] if target else instruction.object,
        category=target["category"] if target else None,
    )


def with_scene(sample: GraspSample, scene: SceneTruth) -> GraspSample:
    """The sample with each positive's object (``labels.owners``) and the segment mask, so that augmentation
    carries both along with the pixels."""
    if len(scene.positives) != len(sample.positives):
        raise ValueError(
            f"{sample.image_id}: scene lists {len(scene.positives)} positives, the labels {len(sample.positives)}"
        )
    labels = replace(sample.labels, owners=tuple(k for k, _ in scene.positives))
    mask = scene.mask.astype(np.uint8) if scene.mask.shape == sample.image.shape[:2] else None
    return replace(sample, labels=labels, mask=mask)
