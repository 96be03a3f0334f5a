"""K-fold splits, image-wise and object-wise, as the grasping literature uses them, and category-wise.

Image- and object-wise splits are true partitions: every image is in exactly one fold's test set, and
an object-wise split never puts one object in two folds. A category-wise split holds out whole categories:
a fold tests on every image that shows one of its categories and trains on the images that show none of
them. On single-object images that is a partition too; a cluttered image showing categories of two
folds is tested in both.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

SPLIT_KINDS = ("iw", "ow", "cw")
DEFAULT_FOLDS = 5
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Fold:
    """One fold: the ids to train on and the ids to test on."""

    index: int
    train: tuple[str, ...]
    test: tuple[str, ...]
    categories: frozenset[str] = frozenset()
    """A category-wise fold's held-out categories (empty for the other kinds)."""


def image_wise_folds(ids: Sequence[str], k: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> list[Fold]:
    """Shuffle images with a seed and cut them into k near-equal test sets."""
    _check_k(k, len(ids), "images")
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    groups = [order[i::k] for i in range(k)]
    return _folds(groups)


def object_wise_folds(
    objects: Mapping[str, str | None], k: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
) -> list[Fold]:
    """Partition by object id: all images of an object land in the same fold.

    Objects are shuffled with the seed, then each goes to the fold with the
    fewest images so far (largest objects first), which keeps folds balanced.
    """
    unknown = sorted(i for i, obj in objects.items() if obj is None)
    if unknown:
        raise ValueError(
            f"object-wise split needs an object id for every image; {len(unknown)} have none "
            f"(first: {unknown[0]}). Give the dataset an object mapping file (objects.csv) or use image-wise."
        )
    by_object: dict[str, list[str]] = {}
    for image_id in sorted(objects):
        by_object.setdefault(objects[image_id], []).append(image_id)
    _check_k(k, len(by_object), "objects")
    names = sorted(by_object)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda name: -len(by_object[name]))  # stable: ties keep the shuffled order
    groups: list[list[str]] = [[] for _ in range(k)]
    for name in names:
        smallest = min(range(k), key=lambda i: (len(groups[i]), i))
        groups[smallest].extend(by_object[name])
    return _folds(groups)


def category_wise_folds(
    categories: Mapping[str, Collection[str]], k: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
) -> list[Fold]:
    """Hold out whole categories: ``categories`` maps each image to the categories it shows.

    Categories are shuffled with the seed and dealt, most-seen first, to the fold with the fewest images so
    far. Fold i tests on the images showing any of its categories and trains on those showing none."""
    unknown = sorted(i for i, names in categories.items() if not names)
    if unknown:
        raise ValueError(
            f"category-wise split needs the categories of every image; {len(unknown)} have none (first: "
            f"{unknown[0]}). Use image-wise or object-wise."
        )
    seen: dict[str, int] = {}
    for names in categories.values():
        for name in set(names):
            seen[name] = seen.get(name, 0) + 1
    _check_k(k, len(seen), "categories")
    names = sorted(seen)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda name: -seen[name])
    groups: list[set[str]] = [set() for _ in range(k)]
    load = [0] * k
    for name in names:
        smallest = min(range(k), key=lambda i: (load[i], i))
        groups[smallest].add(name)
        load[smallest] += seen[name]
    folds = []
    for i, held in enumerate(groups):
        test = sorted(image for image, shown in categories.items() if held & set(shown))
        train = sorted(image for image, shown in categories.items() if not held & set(shown))
        folds.append(Fold(i, tuple(train), tuple(test), frozenset(held)))
    return folds


def make_folds(
    kind: str, keys: Mapping[str, str | None] | Mapping[str, Collection[str]], k: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> list[Fold]:  # fmt: skip
    """Folds of any kind: ``iw`` and ``ow`` from an image id → object id map, ``cw`` from image id → categories
    (``GraspDataset.split_keys`` gives the right one)."""
    if kind == "iw":
        return image_wise_folds(list(keys), k, seed)
    if kind == "ow":
        return object_wise_folds(keys, k, seed)
    if kind == "cw":
        return category_wise_folds(keys, k, seed)
    raise ValueError(f"unknown split {kind!r}: expected one of {SPLIT_KINDS}")


def choose_fold(
    kind: str, keys: Mapping[str, str | None] | Mapping[str, Collection[str]], fold: int, k: int = DEFAULT_FOLDS,
    seed: int = DEFAULT_SEED,
) -> Fold:  # fmt: skip
    """Fold ``fold`` (0-based) of a ``kind`` split, with a clear error for an index out of range."""
    if not 0 <= fold < k:
        raise ValueError(f"fold must be in 0..{k - 1}, got {fold}")
    return make_folds(kind, keys, k, seed)[fold]


def _check_k(k: int, n: int, what: str) -> None:
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    if n < k:
        raise ValueError(f"cannot make {k} folds from {n} {what}")


def _folds(groups: list[list[str]]) -> list[Fold]:
    folds = []
    for i, test in enumerate(groups):
        train = [image_id for j, group in enumerate(groups) if j != i for image_id in group]
        folds.append(Fold(i, tuple(sorted(train)), tuple(sorted(test))))
    return folds
