"""OCID-VLG: cluttered indoor tabletop scenes, one referring sentence per target, its grasp rectangles only.

Read from the layout the dataset is distributed in (see docs/datasets.md)::

    ROOT/refer/<version>/{train,val,test}_expressions.json     version: "multiple" (default) or another
    ROOT/<sequence>/rgb/<name>.png                             640×480 RGB
    ROOT/<sequence>/depth/<name>.png                           uint16 millimetres (0: no reading)
    ROOT/<sequence>/seg_mask_instances_combi/<name>.png        instance mask: each object's id

An expressions file is ``{"data": [...]}``; each entry has ``image_filename`` (``"<sequence>,<name>.png"``),
``question`` (the sentence), ``question_index`` (its id), ``answer`` (the target's value in the instance
mask), ``target`` (its OCID label, e.g. ``apple_1``), ``box`` (x, y, w, h) and ``grasps`` (rectangles as 4
corners of x, y). The dataset's own loader takes the opening from corner 1 to corner 4, so the reader turns
each rectangle to our convention (first edge = closing axis): corners 1, 4, 3, 2.

Each entry becomes an ``Instruction`` (kind ``referring``, id ``question_index``, target the mask value);
an image's labels are every referred object's rectangles, an instruction's those of its target. There
are no part regions: the part-aware metric does not apply, the target rate does (from the mask).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.grasp import GraspRectangle

from .base import GraspDataset
from .files import DatasetFormatError, image_size, read_json, read_rgb
from .referring import Instruction, SceneTruth
from .sample import GraspLabels, GraspSample

SPLITS = ("train", "val", "test")
ENTRY_KEYS = ("image_filename", "question", "question_index", "answer", "target", "grasps")
CORNER_ORDER = (0, 3, 2, 1)  # the dataset's opening runs corner 1 -> 4; ours is the first edge
REFERRING_KIND = "referring"


class OcidVlgDataset(GraspDataset):
    """Reader for an OCID-VLG root; ``split`` picks the expressions file (the benchmark's ``test`` by default)."""

    name = "OCID-VLG"

    def __init__(self, root: Path, split: str = "test", version: str = "multiple"):
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"unknown OCID-VLG split {split!r}; known: {', '.join(SPLITS)}")
        path = root / "refer" / version / f"{split}_expressions.json"
        entries = _read_entries(path)
        self._entries: dict[str, dict] = {}
        by_image: dict[str, list[str]] = {}
        instructions = []
        for number, entry in enumerate(entries):
            sequence, _, name = entry["image_filename"].partition(",")
            image_id = f"{sequence}/{name}"
            sid = str(entry["question_index"])
            if sid in self._entries:
                raise DatasetFormatError(path, f"entry {number}: question_index {sid} appears twice")
            self._entries[sid] = {**entry, "sequence": sequence, "name": name, "number": number}
            by_image.setdefault(image_id, []).append(sid)
            instructions.append(Instruction(sid, image_id, entry["question"], REFERRING_KIND, int(entry["answer"])))
        super().__init__(root, list(by_image))
        self.instructions = instructions
        self._by_image = by_image
        self.expressions = path
        for image_id in self.ids:
            rgb = self._path(image_id, "rgb")
            if not rgb.is_file():
                raise DatasetFormatError(path, f"{image_id}: no RGB image at {rgb}")

    def _path(self, image_id: str, folder: str) -> Path:
        sequence, name = image_id.rsplit("/", 1)
        return self.root / sequence / folder / name

    def _rectangles(self, sid: str) -> tuple[GraspRectangle, ...]:
        entry = self._entries[sid]
        try:
            corners = np.asarray(entry["grasps"], dtype=float).reshape(-1, 4, 2)
        except ValueError:
            raise DatasetFormatError(
                self.expressions, f"entry {entry['number']}: grasps must be rectangles of 4 (x, y) corners"
            ) from None
        if not np.all(np.isfinite(corners)):
            raise DatasetFormatError(self.expressions, f"entry {entry['number']}: non-finite grasp corner")
        return tuple(GraspRectangle(c[list(CORNER_ORDER)]) for c in corners)

    def _read_labels(self, image_id: str) -> GraspLabels:
        positives = []
        for sid in self._by_image[image_id]:
            positives += [r for r in self._rectangles(sid) if r not in positives]
        return GraspLabels(
            image_id=image_id,
            image_size=image_size(self._path(image_id, "rgb")),
            positives=tuple(positives),
            source=self._path(image_id, "rgb"),
        )

    def instruction_labels(self, instruction: Instruction) -> GraspLabels:
        """The target's rectangles, named by its OCID label (``apple_1`` → category ``apple``)."""
        entry = self._entries.get(instruction.id)
        if entry is None:
            raise KeyError(f"instruction {instruction.id!r} is not in {self.expressions}")
        label = str(entry["target"])
        return replace(
            self.labels(instruction.image),
            positives=self._rectangles(instruction.id),
            object_id=label,
            object_name=label.replace("_", " "),
            category=label.rsplit("_", 1)[0].replace("_", " ") if "_" in label else label,
        )

    def _read_scene(self, image_id: str) -> SceneTruth | None:
        """The instance mask as scene truth: one object per mask value, no part regions."""
        path = self._path(image_id, "seg_mask_instances_combi")
        if not path.is_file():
            return None
        try:
            with Image.open(path) as img:
                ids = np.asarray(img).astype(np.int64)
        except (OSError, ValueError) as exc:
            raise DatasetFormatError(path, f"not a readable mask: {exc}") from exc
        values = [int(v) for v in np.unique(ids) if v != 0]
        if len(values) > 254:
            raise DatasetFormatError(path, f"{len(values)} objects: more than the 254 a scene mask holds")
        lookup = {v: i + 1 for i, v in enumerate(values)}
        mask = np.zeros(ids.shape, dtype=np.uint8)
        for v, i in lookup.items():
            mask[ids == v] = i
        # object k of the scene is mask value k (instructions name mask values); 0 is the background
        objects = tuple({"object_id": str(v), "regions": []} for v in range(max(values, default=0) + 1))
        return SceneTruth(objects, (), tuple((v, "object") for v in values), mask)

    def load(self, image_id: str, with_depth: bool = True) -> GraspSample:
        labels = self.labels(image_id)
        depth = self.read_depth(image_id) if with_depth else None
        return GraspSample(read_rgb(self._path(image_id, "rgb")), labels, depth)

    def read_depth(self, image_id: str) -> np.ndarray | None:
        """Depth in metres (NaN where the sensor read nothing), from the uint16 millimetre PNG."""
        path = self._path(image_id, "depth")
        if not path.is_file():
            return None
        try:
            with Image.open(path) as img:
                mm = np.asarray(img).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise DatasetFormatError(path, f"not a readable depth image: {exc}") from exc
        if mm.ndim != 2:
            raise DatasetFormatError(path, f"depth must have one channel, got shape {mm.shape}")
        return np.where(mm > 0, mm / 1000.0, np.nan).astype(np.float32)


def _read_entries(path: Path) -> list[dict]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DatasetFormatError(path, 'expected {"data": [entries]}')
    for number, entry in enumerate(data["data"]):
        missing = [k for k in ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise DatasetFormatError(path, f"entry {number} lacks {missing}")
        if "," not in str(entry["image_filename"]):
            raise DatasetFormatError(path, f"entry {number}: image_filename must be '<sequence>,<name>'")
        if not isinstance(entry["answer"], int) or isinstance(entry["answer"], bool):
            raise DatasetFormatError(path, f"entry {number}: answer (the target's mask value) must be an integer")
    if not data["data"]:
        raise DatasetFormatError(path, "no entries")
    return data["data"]
