"""What every dataset reader offers: image ids, labels without pixels, and full samples."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

from .referring import Instruction, SceneTruth, target_labels
from .sample import GraspLabels, GraspSample


class GraspDataset(ABC):
    """A read-only grasp dataset on disk, indexed by image id.

    ``labels`` reads rectangles and the image size without decoding pixels
    (what the metric needs); ``load`` returns the full ``GraspSample``.
    """

    name = "dataset"

    def __init__(self, root: Path, ids: list[str]):
        self.root = Path(root)
        self.ids = sorted(ids)
        self._id_set = set(self.ids)
        self._labels: dict[str, GraspLabels] = {}
        self._scenes: dict[str, SceneTruth | None] = {}
        self.instructions: list[Instruction] = []
        """Referring instructions of the root (empty when it has none)."""

    @abstractmethod
    def _read_labels(self, image_id: str) -> GraspLabels:
        """Parse the labels of one image (called once per id; results are cached)."""

    @abstractmethod
    def load(self, image_id: str, with_depth: bool = True) -> GraspSample:
        """The image, depth (when present and asked for) and labels of one image id."""

    def labels(self, image_id: str) -> GraspLabels:
        """Labels of one image; ``KeyError`` naming the id if the dataset lacks it."""
        if image_id not in self._labels:
            if image_id not in self._id_set:
                raise KeyError(f"image {image_id!r} is not in the {self.name} dataset at {self.root}")
            self._labels[image_id] = self._read_labels(image_id)
        return self._labels[image_id]

    def _read_scene(self, image_id: str) -> SceneTruth | None:
        """Per-object ground truth of one image, where the dataset has it (override)."""
        return None

    def scene(self, image_id: str) -> SceneTruth | None:
        """The image's per-object ground truth (objects, regions, mask), or None when the dataset has none."""
        if image_id not in self._scenes:
            self.labels(image_id)  # names an unknown id
            self._scenes[image_id] = self._read_scene(image_id)
        return self._scenes[image_id]

    def instruction_labels(self, instruction: Instruction) -> GraspLabels:
        """The labels of the instruction's image narrowed to its target's positives (none for absent)."""
        scene = self.scene(instruction.image)
        if scene is None:
            raise ValueError(f"{instruction.image} has no per-object ground truth to narrow to a target")
        return target_labels(self.labels(instruction.image), scene, instruction)

    def object_ids(self) -> dict[str, str | None]:
        """Object id of every image (None where unknown)."""
        return {i: self.labels(i).object_id for i in self.ids}

    def categories_by_image(self) -> dict[str, frozenset[str]]:
        """The categories every image shows: its scene's objects, else its labels' category (empty: unknown)."""
        shown = {}
        for image_id in self.ids:
            scene = self.scene(image_id)
            if scene is not None and scene.objects:
                names = {o.get("category") for o in scene.objects}
            else:
                names = {self.labels(image_id).category}
            shown[image_id] = frozenset(n for n in names if n)
        return shown

    def split_keys(self, kind: str) -> dict:
        """What a ``kind`` split partitions by: object ids (``iw``, ``ow``) or each image's categories (``cw``)."""
        return self.categories_by_image() if kind == "cw" else self.object_ids()

    def with_targets_in(self, categories: frozenset[str]) -> GraspDataset:
        """The same dataset scoring only instructions whose target is of these categories (a category-wise test
        fold: its images may also show categories the tuning saw, and ``absent`` names no target)."""
        narrowed = copy.copy(self)
        narrowed.instructions = [
            i
            for i in self.instructions
            if i.target is not None and self.scene(i.image).objects[i.target].get("category") in categories
        ]
        return narrowed

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._id_set

    def __iter__(self) -> Iterator[GraspSample]:
        for image_id in self.ids:
            yield self.load(image_id)
