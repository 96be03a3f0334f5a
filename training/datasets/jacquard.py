"""The Jacquard dataset: ``<scene>_<object>_RGB.png``, ``_perfect_depth.tiff``, ``_grasps.txt``.

The image id is the file prefix (``0_1a2b3c`` of ``0_1a2b3c_RGB.png``); the
object id is the part after the first underscore (the object's model id,
shared by every scene of that object), so object-wise splits work as they are.
"""

from __future__ import annotations

from pathlib import Path

from .base import GraspDataset
from .files import DatasetFormatError, image_size, read_depth_tiff, read_jacquard_grasps, read_rgb
from .sample import GraspLabels, GraspSample

SUFFIXES = {"rgb": "_RGB.png", "depth": "_perfect_depth.tiff", "grasps": "_grasps.txt"}


class JacquardDataset(GraspDataset):
    """Reader for a Jacquard root (any folder nesting)."""

    name = "Jacquard"

    def __init__(self, root: Path):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root {root} is not a directory")
        self.prefixes: dict[str, Path] = {}
        for grasps in sorted(root.rglob("*" + SUFFIXES["grasps"])):
            image_id = grasps.name[: -len(SUFFIXES["grasps"])]
            if image_id in self.prefixes:
                raise DatasetFormatError(grasps, f"{image_id} appears twice (also {self.prefixes[image_id]})")
            rgb = self._path(grasps.parent / image_id, "rgb")
            if not rgb.is_file():
                raise DatasetFormatError(grasps, f"no {rgb.name} for these grasps")
            self.prefixes[image_id] = grasps.parent / image_id
        if not self.prefixes:
            raise FileNotFoundError(f"no Jacquard images (*_RGB.png + *_grasps.txt) under {root}")
        super().__init__(root, list(self.prefixes))

    @staticmethod
    def _path(prefix: Path, kind: str) -> Path:
        return prefix.with_name(prefix.name + SUFFIXES[kind])

    def _read_labels(self, image_id: str) -> GraspLabels:
        prefix = self.prefixes[image_id]
        object_id = image_id.split("_", 1)[1] if "_" in image_id else image_id
        rgb = self._path(prefix, "rgb")
        return GraspLabels(
            image_id=image_id,
            image_size=image_size(rgb),
            positives=read_jacquard_grasps(self._path(prefix, "grasps")),
            object_id=object_id,
            source=rgb,
        )

    def load(self, image_id: str, with_depth: bool = True) -> GraspSample:
        labels = self.labels(image_id)
        depth_path = self._path(self.prefixes[image_id], "depth")
        depth = read_depth_tiff(depth_path) if with_depth and depth_path.is_file() else None
        return GraspSample(read_rgb(labels.source), labels, depth)
