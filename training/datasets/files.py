"""Low-level readers and writers for the files grasp datasets are made of.

Every parse error names the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.grasp import GraspRectangle, ImageSize


class DatasetFormatError(ValueError):
    """A dataset file is missing or malformed; the message names the file (and line)."""

    def __init__(self, path: Path, reason: str, line: int | None = None):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {reason}")
        self.path, self.line, self.reason = path, line, reason


@dataclass(frozen=True)
class RectangleFile:
    """Rectangles read from one Cornell label file."""

    rectangles: tuple[GraspRectangle, ...]
    skipped: int
    """Rectangles with NaN coordinates, dropped as every Cornell reader does."""
    kept: tuple[int, ...] = ()
    """Index in the file of each rectangle kept (to align per-rectangle side files)."""


def read_cornell_rectangles(path: Path, round_to_pixel: bool = True) -> RectangleFile:
    """Read a ``pcdNNNNcpos.txt`` / ``cneg.txt`` file: 4 lines of ``x y`` per rectangle.

    ``round_to_pixel`` rounds each corner to whole pixels, as GR-ConvNet's reader
    does, so that our figures are comparable with the published ones.
    """
    corners: list[tuple[float, float]] = []
    last_line = 0
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetFormatError(path, f"expected 'x y', got {line.strip()!r}", number)
        try:
            corners.append((float(fields[0]), float(fields[1])))
        except ValueError:
            raise DatasetFormatError(path, f"not a number in {line.strip()!r}", number) from None
        last_line = number
    if len(corners) % 4:
        raise DatasetFormatError(path, f"{len(corners)} corner lines is not a multiple of 4", last_line)
    rectangles, kept = [], []
    for i in range(0, len(corners), 4):
        pts = np.array(corners[i : i + 4])
        if np.all(np.isfinite(pts)):
            rectangles.append(GraspRectangle(np.round(pts) if round_to_pixel else pts))
            kept.append(i // 4)
    return RectangleFile(tuple(rectangles), len(corners) // 4 - len(kept), tuple(kept))


def read_parts(path: Path, count: int) -> tuple[str, ...]:
    """Read a ``pcdNNNNparts.txt``: the object part of each positive rectangle, one per line."""
    try:
        parts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    if len(parts) != count:
        raise DatasetFormatError(path, f"{len(parts)} part names for {count} positive rectangles")
    return tuple(parts)


def write_cornell_rectangles(path: Path, rectangles: tuple[GraspRectangle, ...] | list[GraspRectangle]) -> None:
    """Write rectangles in Cornell's format (4 lines of ``x y``, corners in file order)."""
    lines = [f"{x:.3f} {y:.3f}" for rect in rectangles for x, y in rect.points]
    path.write_text("".join(line + "\n" for line in lines))


def read_jacquard_grasps(path: Path) -> tuple[GraspRectangle, ...]:
    """Read a Jacquard ``*_grasps.txt``: ``x;y;theta_deg;w;h`` per line.

    Jacquard measures θ the other way round, so it is negated; ``w`` is the
    opening (our ``length``) and ``h`` the jaw size (our ``width``).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    rectangles = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(";")
        if len(fields) != 5:
            raise DatasetFormatError(path, f"expected 'x;y;theta;w;h', got {line.strip()!r}", number)
        try:
            x, y, theta, w, h = (float(f) for f in fields)
        except ValueError:
            raise DatasetFormatError(path, f"not a number in {line.strip()!r}", number) from None
        if not all(math.isfinite(v) for v in (x, y, theta, w, h)):
            raise DatasetFormatError(path, f"non-finite value in {line.strip()!r}", number)
        rectangles.append(GraspRectangle.from_center(x, y, math.radians(-theta), w, h))
    return tuple(rectangles)


def image_size(path: Path) -> ImageSize:
    """(width, height) of an image file, read from its header only."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(path, f"not a readable image: {exc}") from exc


def read_json(path: Path):
    """A JSON file's content; a missing, unreadable or malformed file raises ``DatasetFormatError`` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(path, f"not JSON ({exc.msg})") from None


def read_rgb(path: Path) -> np.ndarray:
    """An image file as H×W×3 uint8."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(path, f"not a readable image: {exc}") from exc


def read_depth_tiff(path: Path) -> np.ndarray:
    """A single-channel depth TIFF as H×W float32 (metres; NaN where there is no reading)."""
    try:
        with Image.open(path) as img:
            depth = np.asarray(img, dtype=np.float32)
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(path, f"not a readable depth image: {exc}") from exc
    if depth.ndim != 2:
        raise DatasetFormatError(path, f"depth must have one channel, got shape {depth.shape}")
    return depth


def write_depth_tiff(path: Path, depth: np.ndarray) -> None:
    """Write H×W depth in metres as a float32 TIFF (readable by PIL, OpenCV, tifffile)."""
    Image.fromarray(np.ascontiguousarray(depth, dtype=np.float32)).save(path)


@dataclass(frozen=True)
class ObjectInfo:
    """Which physical object an image shows."""

    object_id: str
    name: str
    category: str | None = None


def read_object_map(path: Path, normalise_id=lambda s: s) -> dict[str, ObjectInfo]:
    """Read the image → object mapping.

    CSV with a header naming ``image_id``, ``object_id``, ``name`` and optionally
    ``category``; or whitespace-separated lines ``image object_id name...``.
    ``normalise_id`` maps the file's image ids to the dataset's (``100`` →
    ``pcd0100`` for Cornell).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    first = text.lstrip().split("\n", 1)[0]
    rows = _csv_rows(path, text) if "," in first else _whitespace_rows(path, text)
    mapping: dict[str, ObjectInfo] = {}
    for number, image, info in rows:
        key = normalise_id(image)
        if key in mapping:
            raise DatasetFormatError(path, f"image {image!r} is listed twice", number)
        mapping[key] = info
    return mapping


def _csv_rows(path: Path, text: str):
    reader = csv.DictReader(text.splitlines())
    missing = {"image_id", "object_id", "name"} - set(reader.fieldnames or ())
    if missing:
        raise DatasetFormatError(path, f"CSV header lacks {sorted(missing)}", 1)
    for row in reader:
        number = reader.line_num
        if not row["image_id"] or not row["object_id"]:
            raise DatasetFormatError(path, "empty image_id or object_id", number)
        info = ObjectInfo(
            row["object_id"].strip(), (row["name"] or "").strip(), (row.get("category") or "").strip() or None
        )
        yield number, row["image_id"].strip(), info


def _whitespace_rows(path: Path, text: str):
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 3:
            raise DatasetFormatError(path, f"expected 'image object_id name', got {line.strip()!r}", number)
        yield number, fields[0], ObjectInfo(fields[1], " ".join(fields[2:]))


def write_object_map(path: Path, rows: dict[str, ObjectInfo]) -> None:
    """Write the CSV form of the image → object mapping."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "object_id", "name", "category"])
        for image_id, info in sorted(rows.items()):
            writer.writerow([image_id, info.object_id, info.name, info.category or ""])
