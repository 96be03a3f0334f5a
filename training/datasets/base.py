"""What every dataset reader offers: image ids, labels without pixels, and full samples."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

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

    def object_ids(self) -> dict[str, str | None]:
        """Object id of every image (None where unknown)."""
        return {i: self.labels(i).object_id for i in self.ids}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._id_set

    def __iter__(self) -> Iterator[GraspSample]:
        for image_id in self.ids:
            yield self.load(image_id)
