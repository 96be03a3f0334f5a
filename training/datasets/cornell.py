"""The Cornell grasping dataset (and anything written in its format, like our synthetic set).

Files per image ``pcdNNNN``: ``pcdNNNNr.png`` (RGB), ``pcdNNNNcpos.txt`` /
``pcdNNNNcneg.txt`` (rectangles), optionally ``pcdNNNNd.tiff`` (depth, metres)
or the ``pcdNNNN.txt`` point cloud, and (ours, written by the synthetic set)
``pcdNNNNparts.txt``, the object part of each positive rectangle, ``pcdNNNNscene.json`` and
``pcdNNNNmask.png`` (per-object ground truth, see ``referring``), and ``instructions.jsonl`` at the
root. They are found anywhere under the root, so
both layouts in circulation read the same way: the original's numbered
folders ``01/``…``10/``, and the re-packaged one with ``image/``,
``pos_label/``, ``neg_label/`` and ``depth_image/``.

Object identity comes from a mapping file at the root (``objects.csv``, or
``z.txt``) or given explicitly; see ``files.read_object_map``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .base import GraspDataset
from .files import (
    DatasetFormatError,
    ObjectInfo,
    image_size,
    read_cornell_rectangles,
    read_depth_tiff,
    read_object_map,
    read_parts,
    read_rgb,
)
from .pointcloud import read_pcd_depth
from .referring import INSTRUCTIONS_FILE, SceneTruth, read_instructions, read_scene
from .sample import GraspLabels, GraspSample

log = logging.getLogger(__name__)

FILE_PATTERN = re.compile(r"^pcd(\d+)(r\.png|cpos\.txt|cneg\.txt|parts\.txt|scene\.json|mask\.png|d\.tiff?|\.txt)$")
KINDS = {
    "r.png": "rgb",
    "cpos.txt": "pos",
    "cneg.txt": "neg",
    "parts.txt": "parts",  # ours: the object part of each positive rectangle
    "scene.json": "scene",  # ours: objects, regions in pixels, owner and part of each positive
    "mask.png": "mask",  # ours: the segment (object, part) seen at each pixel
    "d.tiff": "depth",
    "d.tif": "depth",
    ".txt": "cloud",
}
OBJECT_MAP_NAMES = ("objects.csv", "z.txt")


def cornell_id(raw: str) -> str:
    """Normalise an image reference (``100``, ``0100``, ``pcd0100``) to ``pcd0100``."""
    digits = raw[3:] if raw.startswith("pcd") else raw
    return f"pcd{int(digits):04d}" if digits.isdigit() else raw


class CornellDataset(GraspDataset):
    """Reader for Cornell-format roots; ``round_to_pixel`` follows GR-ConvNet (see files)."""

    name = "Cornell"

    def __init__(self, root: Path, objects: Path | None = None, round_to_pixel: bool = True):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset root {root} is not a directory")
        self.files = _index_files(root)
        missing_pos = sorted(i for i, kinds in self.files.items() if "pos" not in kinds and "rgb" in kinds)
        if missing_pos:
            path = self.files[missing_pos[0]]["rgb"]
            raise DatasetFormatError(
                path, f"no {missing_pos[0]}cpos.txt beside it ({len(missing_pos)} images lack one)"
            )
        ids = [i for i, kinds in self.files.items() if "pos" in kinds]
        for image_id in ids:
            if "rgb" not in self.files[image_id]:
                raise DatasetFormatError(self.files[image_id]["pos"], f"no {image_id}r.png for these labels")
        if not ids:
            raise FileNotFoundError(f"no Cornell-format images (pcdNNNNr.png + pcdNNNNcpos.txt) under {root}")
        super().__init__(root, ids)
        self.round_to_pixel = round_to_pixel
        self.objects_path = objects or next((root / n for n in OBJECT_MAP_NAMES if (root / n).is_file()), None)
        self.objects: dict[str, ObjectInfo] = {}
        if self.objects_path is not None:
            self.objects = read_object_map(Path(self.objects_path), cornell_id)
            unmapped = [i for i in self.ids if i not in self.objects]
            if unmapped:
                log.warning("%d images have no entry in %s (first: %s)", len(unmapped), self.objects_path, unmapped[0])
        if (root / INSTRUCTIONS_FILE).is_file():
            self.instructions = read_instructions(root / INSTRUCTIONS_FILE)
            unknown = [i.image for i in self.instructions if i.image not in self._id_set]
            if unknown:
                raise DatasetFormatError(root / INSTRUCTIONS_FILE, f"instructions name unknown images {unknown[:5]}")

    def _read_scene(self, image_id: str) -> SceneTruth | None:
        files = self.files[image_id]
        if "scene" not in files:
            return None
        if "mask" not in files:
            raise DatasetFormatError(files["scene"], f"no {image_id}mask.png beside it")
        return read_scene(files["scene"], files["mask"])

    @property
    def layout(self) -> str:
        """Which of the circulating layouts the root uses (informational)."""
        parent = self.files[self.ids[0]]["rgb"].parent
        if parent == self.root:
            return "flat"
        if parent.name == "image":
            return "re-packaged (image/, pos_label/, neg_label/, depth_image/)"
        return "numbered folders" if parent.name.isdigit() else f"nested ({parent.relative_to(self.root)})"

    def _read_labels(self, image_id: str) -> GraspLabels:
        files = self.files[image_id]
        pos = read_cornell_rectangles(files["pos"], self.round_to_pixel)
        neg = read_cornell_rectangles(files["neg"], self.round_to_pixel) if "neg" in files else None
        info = self.objects.get(image_id)
        parts = ()
        if "parts" in files:
            all_parts = read_parts(files["parts"], len(pos.rectangles) + pos.skipped)
            parts = tuple(all_parts[i] for i in pos.kept)
        return GraspLabels(
            image_id=image_id,
            image_size=image_size(files["rgb"]),
            positives=pos.rectangles,
            negatives=neg.rectangles if neg else (),
            object_id=info.object_id if info else None,
            object_name=info.name if info else None,
            category=info.category if info else None,
            source=files["rgb"],
            skipped=pos.skipped + (neg.skipped if neg else 0),
            parts=parts,
        )

    def load(self, image_id: str, with_depth: bool = True) -> GraspSample:
        labels = self.labels(image_id)
        depth = self.read_depth(image_id) if with_depth else None
        return GraspSample(read_rgb(self.files[image_id]["rgb"]), labels, depth)

    def read_depth(self, image_id: str):
        """Depth of one image: the TIFF if present, else from the point cloud, else None."""
        files = self.files[image_id]
        if "depth" in files:
            return read_depth_tiff(files["depth"])
        if "cloud" in files:
            return read_pcd_depth(files["cloud"], self.labels(image_id).image_size)
        return None


def _index_files(root: Path) -> dict[str, dict[str, Path]]:
    """Map image id → {kind: path} for every Cornell-named file under root."""
    index: dict[str, dict[str, Path]] = {}
    for path in sorted(root.rglob("pcd*")):
        match = FILE_PATTERN.match(path.name)
        if not match or not path.is_file():
            continue
        image_id, kind = f"pcd{int(match.group(1)):04d}", KINDS[match.group(2)]
        kinds = index.setdefault(image_id, {})
        if kind in kinds:
            raise DatasetFormatError(path, f"{image_id} appears twice (also {kinds[kind]})")
        kinds[kind] = path
    return index
