"""Small Cornell-format roots in both circulating layouts, written from literal file contents."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Cornell's label files: 4 "x y" lines per rectangle; the second one has a NaN and is skipped.
CPOS = """253 319.7
309 324
307 350
251 345.7
100 100
NaN 120
130 120
100 120
"""
CNEG = """300 200
300 260
320 260
320 200
"""
# A PCD v0.7 cloud like Cornell's: x y z in millimetres, index = row * 640 + col.
PCD = """# .PCD v.7 - Point Cloud Data file format
FIELDS x y z rgb index
SIZE 4 4 4 4 4
TYPE F F F F U
COUNT 1 1 1 1 1
WIDTH 3
HEIGHT 1
POINTS 3
DATA ascii
300 400 0 4.2108e+06 0
0 0 1200 4.2108e+06 1283
-600 0 800 4.2108e+06 307199
"""
Z_TXT = """100 7 white mug
101 7 white mug
102 12 red scissors
"""


def rgb(path: Path, size=(640, 480), value=90):
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


@pytest.fixture
def numbered_root(tmp_path) -> Path:
    """The original layout: numbered folders, point clouds, z.txt object map."""
    root = tmp_path / "cornell"
    for folder, image_id in (("01", "pcd0100"), ("01", "pcd0101"), ("02", "pcd0102")):
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        rgb(d / f"{image_id}r.png")
        (d / f"{image_id}cpos.txt").write_text(CPOS)
        (d / f"{image_id}cneg.txt").write_text(CNEG)
        (d / f"{image_id}.txt").write_text(PCD)
    (root / "z.txt").write_text(Z_TXT)
    return root


@pytest.fixture
def repackaged_root(tmp_path) -> Path:
    """The re-packaged layout: image/, pos_label/, neg_label/, depth_image/."""
    root = tmp_path / "cornell-repack"
    for name in ("image", "pos_label", "neg_label", "depth_image"):
        (root / name).mkdir(parents=True)
    for image_id in ("pcd0100", "pcd0101", "pcd0102"):
        rgb(root / "image" / f"{image_id}r.png")
        (root / "pos_label" / f"{image_id}cpos.txt").write_text(CPOS)
        (root / "neg_label" / f"{image_id}cneg.txt").write_text(CNEG)
        depth = np.full((480, 640), 0.75, np.float32)
        Image.fromarray(depth).save(root / "depth_image" / f"{image_id}d.tiff")
    return root
