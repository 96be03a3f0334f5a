"""The object an answer resolved to: its category, read from the reasoning, and its box, found in the depth image.

    names = CategoryNames({"mug": "mug", "coffee mug": "mug", "knife": "knife"})
    names.first("The one on the left is a knife, a long thin blade ...")   # "knife"
    object_box(frame.depth, u, v, radius_px=40)                            # (u0, v0, u1, v1) or None

The category is the first name of the bundle's vocabulary the reasoning mentions (``Manifest.categories``: every
name and synonym → its category). The box is the connected region standing clearly above the table that holds the
grasp centre, or, when the centre falls on the table (between the fingers), the region nearest to it within
``radius_px``. The table is the plane the depth image mostly shows: fitted robustly in inverse depth, which is
linear in the pixel coordinates for any plane, so a tilted camera is no different from a top-down one. numpy only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

HEIGHT_STEP = 0.01
"""Metres above the table that count as an object: the floor baseline's threshold (training/baseline.py, chosen on a
validation set; a real camera's noise is millimetres)."""
CELL = 4
"""Pixels per side of the cells the region is grown on (640 × 480 → 160 × 120): the fill stays a few milliseconds."""
MIN_PIXELS = 30
"""A region smaller than this (camera pixels) is noise, not an object."""
FIT_STRIDE = 8
"""Every 8th pixel in each direction goes into the table's plane fit (4,800 points of a 640 × 480 image)."""
FIT_ROUNDS = 6
MIN_FIT_POINTS = 50


DETERMINERS = frozenset("the a an this that my your".split())
ADJECTIVES = frozenset(
    "red orange yellow green blue purple pink black white grey gray brown small smaller smallest large larger "
    "largest big bigger biggest little tall short long".split()
)
"""Words that may stand between a determiner and the name it introduces ("the smaller red mug")."""
DESCRIBED = frozenset("something anything thing things tool tools".split())
"""Heads of a request by use ("something to turn food in a pan"): a name after them is not the object asked for."""
_WORD = re.compile(r"[a-z']+")


class CategoryNames:
    """The category vocabulary of a bundle: find the category a text names.

    A name followed by ``one`` or by another name is a modifier ("the orange one", "the orange cup"), not the
    object's name, and is skipped."""

    def __init__(self, names: Mapping[str, str]):
        self.names = {k.lower(): v for k, v in names.items() if k.strip()}
        # Alternatives longest first: at the earliest match position the longest name wins ("coffee mug" over "mug").
        words = sorted(self.names, key=lambda n: (-len(n), n))
        self._pattern = (
            re.compile(r"(?<![a-z0-9])(?:" + "|".join(re.escape(w) for w in words) + r")(?![a-z0-9])", re.IGNORECASE)
            if words
            else None
        )

    def first(self, text: str) -> str | None:
        """The category of the earliest name in ``text`` (whole words, any case) that is not a modifier; None
        when it names none (a reasoning: "The orange one is a spoon" names a spoon)."""
        for match in self._names(text):
            return self.names[match.group(0).lower()]
        return None

    def requested(self, text: str) -> tuple[str, str] | None:
        """The object an instruction asks for, as (the name written, lower case; its category): the first name
        that a determiner introduces ("Can you lift the can?": the second), None when there is none or the
        request describes a thing by its use ("a thing I can cut with", "something to turn food in a pan")."""
        found = self._request(text)
        return None if found is None else found[:2]

    def attributes(self, text: str) -> tuple[str, ...]:
        """The words between the determiner and the name of the object an instruction asks for ("the smaller red
        mug": smaller, red); none when it asks for no object by name."""
        found = self._request(text)
        return () if found is None else found[2]

    def _request(self, text: str) -> tuple[str, str, tuple[str, ...]] | None:
        """``requested``'s name and category, and the ``attributes`` before the name."""
        lower = text.lower()
        for match in self._names(text):
            before = _WORD.findall(lower[: match.start()])
            if DESCRIBED.intersection(before):
                return None
            k = len(before) - 1
            while k >= 0 and before[k] in ADJECTIVES:
                k -= 1
            if k >= 0 and before[k] in DETERMINERS:
                return match.group(0).lower(), self.names[match.group(0).lower()], tuple(before[k + 1 :])
        return None

    def _names(self, text: str):
        """The name matches of ``text`` in order, modifiers left out."""
        if self._pattern is None or not text:
            return
        matches = list(self._pattern.finditer(text))
        for k, match in enumerate(matches):
            rest = text[match.end() :]
            after = _WORD.match(rest.lstrip().lower())
            joined = k + 1 < len(matches) and not text[match.end() : matches[k + 1].start()].strip()
            if joined or (after is not None and after.group(0) in ("one", "ones")):
                continue
            yield match


def table_depth(depth: np.ndarray) -> np.ndarray | None:
    """The table's depth at every pixel (H, W), from a robust plane fit; None with too few valid readings.

    Inverse depth ``1/z = a·u + b·v + c`` for a plane seen by a pinhole camera. Least squares on a grid of pixels,
    then again on the pixels within a tolerance of the fitted table, a few rounds: objects (closer) and holes beyond
    the table (farther) drop out as long as the table is most of the image."""
    h, w = depth.shape
    vs, us = np.mgrid[0:h:FIT_STRIDE, 0:w:FIT_STRIDE]
    z = depth[vs, us].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    if valid.sum() < MIN_FIT_POINTS:
        return None
    A = np.stack([us[valid], vs[valid], np.ones(valid.sum())], axis=1).astype(np.float64)
    z = z[valid]
    keep = np.ones(len(z), bool)
    for _ in range(FIT_ROUNDS):
        coef = np.linalg.lstsq(A[keep], 1.0 / z[keep], rcond=None)[0]
        fitted = 1.0 / np.maximum(A @ coef, 1e-6)
        residual = fitted - z  # positive: closer than the plane
        centre = np.median(residual[keep])  # the table's, while the table is most of what is kept
        spread = 1.4826 * np.median(np.abs(residual[keep] - centre))
        keep_next = np.abs(residual - centre) < max(HEIGHT_STEP / 2, 3 * spread)
        if keep_next.sum() < MIN_FIT_POINTS or np.array_equal(keep_next, keep):
            break
        keep = keep_next
    plane = coef[0] * np.arange(w)[None, :] + coef[1] * np.arange(h)[:, None] + coef[2]
    with np.errstate(divide="ignore"):
        return np.where(plane > 0, 1.0 / plane, np.inf)


def above_table(depth: np.ndarray, step: float = HEIGHT_STEP) -> np.ndarray | None:
    """A boolean mask of the pixels standing more than ``step`` metres above the table; None without a table."""
    table = table_depth(depth)
    if table is None:
        return None
    with np.errstate(invalid="ignore"):
        return depth < table - step  # NaN (no reading) compares False


def object_box(
    depth: np.ndarray, u: float, v: float, radius_px: float = 40.0, step: float = HEIGHT_STEP
) -> tuple[int, int, int, int] | None:
    """The pixel box ``(u0, v0, u1, v1)`` (``u0 <= u < u1``, ``v0 <= v < v1``) of the object at the grasp centre
    ``(u, v)``, or of the one nearest to it within ``radius_px``; None without depth, a table or such an object."""
    if depth is None or depth.ndim != 2:
        return None
    mask = above_table(depth, step)
    if mask is None:
        return None
    h, w = mask.shape
    cells = _cells(mask)
    seed = _seed(cells, u, v, radius_px)
    if seed is None:
        return None
    region = _grow(cells, seed)
    rows, cols = _pixels(region, mask)
    if len(rows) < MIN_PIXELS:
        return None
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def _pixels(region: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object's pixels: those of its cells, grown pixel by pixel inside the mask into the cells around it (the
    edge pixels of cells too sparse to be set), never onto speckle that does not touch the object."""
    h, w = mask.shape
    r0, c0 = np.nonzero(region)
    top, left = max(0, (r0.min() - 1) * CELL), max(0, (c0.min() - 1) * CELL)
    bottom, right = min(h, (r0.max() + 2) * CELL), min(w, (c0.max() + 2) * CELL)
    inside = mask[top:bottom, left:right]
    full = np.repeat(np.repeat(region, CELL, axis=0), CELL, axis=1)[top:bottom, left:right]
    pixels = full & inside
    for _ in range(CELL):
        pixels = _dilate(pixels) & inside
    rows, cols = np.nonzero(pixels)
    return rows + top, cols + left


def _cells(mask: np.ndarray) -> np.ndarray:
    """Cells of ``CELL`` × ``CELL`` pixels, set where most of their pixels are set (speckle does not join objects)."""
    h, w = mask.shape
    H, W = -(-h // CELL), -(-w // CELL)
    padded = np.zeros((H * CELL, W * CELL), bool)
    padded[:h, :w] = mask
    counts = padded.reshape(H, CELL, W, CELL).sum(axis=(1, 3))
    return counts * 2 > CELL * CELL


def _seed(cells: np.ndarray, u: float, v: float, radius_px: float) -> tuple[int, int] | None:
    """The cell under (u, v) when it is set, else the nearest set cell within ``radius_px``."""
    H, W = cells.shape
    cu, cv = int(u) // CELL, int(v) // CELL
    if not (0 <= cu < W and 0 <= cv < H):
        return None
    if cells[cv, cu]:
        return cv, cu
    r = int(np.ceil(radius_px / CELL))
    r0, c0 = max(0, cv - r), max(0, cu - r)
    window = cells[r0 : cv + r + 1, c0 : cu + r + 1]
    rows, cols = np.nonzero(window)
    if not len(rows):
        return None
    # distance from (u, v) to each cell's centre, in pixels
    d2 = ((rows + r0 + 0.5) * CELL - v) ** 2 + ((cols + c0 + 0.5) * CELL - u) ** 2
    best = int(np.argmin(d2))
    if d2[best] > (radius_px + CELL) ** 2:
        return None
    return int(rows[best] + r0), int(cols[best] + c0)


def _grow(cells: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """The 4-connected region of set cells holding ``seed``: a fill by repeated dilation inside the mask."""
    region = np.zeros_like(cells)
    region[seed] = True
    while True:
        grown = _dilate(region) & cells
        if np.array_equal(grown, region):
            return region
        region = grown


def _dilate(region: np.ndarray) -> np.ndarray:
    """``region`` and its 4-neighbours."""
    out = region.copy()
    out[1:] |= region[:-1]
    out[:-1] |= region[1:]
    out[:, 1:] |= region[:, :-1]
    out[:, :-1] |= region[:, 1:]
    return out
