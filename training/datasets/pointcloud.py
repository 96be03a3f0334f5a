"""Cornell's ``pcdNNNN.txt`` point clouds (PCD v0.7, ASCII) turned into depth images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import DatasetFormatError

REQUIRED_FIELDS = ("x", "y", "z", "index")
MILLIMETRES = 1000.0


def read_pcd_depth(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Depth image (H×W float32, metres, NaN = hole) from a Cornell point cloud.

    Each point carries the pixel it was seen in as ``index`` (row = index // W,
    col = index % W). The value is the point's distance from the cloud origin
    in metres, the quantity GR-ConvNet's Cornell reader uses; pixels with no
    point are NaN.
    """
    width, height = size
    fields, data_line = _read_header(path)
    columns = [fields.index(name) for name in REQUIRED_FIELDS]
    try:
        table = np.loadtxt(path, skiprows=data_line, usecols=columns, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise DatasetFormatError(path, f"bad point line: {exc}") from None
    depth = np.full(height * width, np.nan, dtype=np.float32)
    if len(table):
        index = table[:, 3].astype(np.int64)
        bad = (index < 0) | (index >= height * width)
        if bad.any():
            row = int(np.argmax(bad))
            raise DatasetFormatError(
                path, f"pixel index {index[row]} outside a {width}×{height} image", data_line + row + 1
            )
        depth[index] = np.linalg.norm(table[:, :3], axis=1) / MILLIMETRES
    return depth.reshape(height, width)


def _read_header(path: Path) -> tuple[list[str], int]:
    """Field names and the number of header lines before the first point."""
    fields: list[str] | None = None
    try:
        with path.open() as f:
            for number, line in enumerate(f, start=1):
                words = line.split()
                if not words or words[0].startswith("#"):
                    continue
                key = words[0].upper()
                if key == "FIELDS":
                    fields = [w.lower() for w in words[1:]]
                elif key == "DATA":
                    if len(words) < 2 or words[1].lower() != "ascii":
                        raise DatasetFormatError(path, f"only 'DATA ascii' is supported, got {line.strip()!r}", number)
                    if fields is None:
                        raise DatasetFormatError(path, "no FIELDS line before DATA", number)
                    missing = [name for name in REQUIRED_FIELDS if name not in fields]
                    if missing:
                        raise DatasetFormatError(path, f"FIELDS lacks {missing}", number)
                    return fields, number
    except OSError as exc:
        raise DatasetFormatError(path, f"cannot read: {exc.strerror or exc}") from exc
    raise DatasetFormatError(path, "no DATA line: not a PCD file")
