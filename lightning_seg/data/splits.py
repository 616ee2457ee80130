"""Deterministic splits derived from a seed: the same seed gives the same split on any machine.

Items are sorted before shuffling, so the split depends on the data and the seed only, never on
the order in which a file system lists the files.

``fold`` turns one split into k-fold cross-validation: the shuffled sequence is rotated by
``fold`` test-sized blocks before it is cut, so folds 0 .. k-1 (k = items // test size, 4 for
a 25 % test split) test every item exactly once, each fold validating on the block that the
fold before it tests. Fold 0 is the plain split, so a fold-0 number is every earlier number.

``val_fold`` does the same inside one fold's train + val items (nested cross-validation): it
rotates them by val-sized blocks, so val folds 0 .. j-1 (3 for 50/25/25) validate on every
non-test item once while the test split stays where it is. Recipes can then be compared on
three validation quarters instead of one without the test split ever choosing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")
SPLITS = ("train", "val", "test")


def _sizes(count: int, fractions: Sequence[float]) -> list[int]:
    """Split ``count`` into parts proportional to ``fractions`` (largest remainders)."""
    raw = np.asarray(fractions, float) / sum(fractions) * count
    sizes = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - sizes), kind="stable")[: count - sizes.sum()]:
        sizes[i] += 1
    return sizes.tolist()


class FoldError(ValueError):
    """A fold (or val fold) outside the folds that the items and the fractions allow;
    ``setting`` names which of the two."""

    def __init__(self, message: str, setting: str = "fold") -> None:
        super().__init__(message)
        self.setting = setting


def _test_size(sizes: Sequence[int]) -> int:
    return sizes[2] if len(sizes) > 2 else 0


def fold_count(count: int, fractions: Sequence[float]) -> int:
    """How many disjoint test blocks ``count`` items hold (the k of k-fold cross-validation)."""
    test = _test_size(_sizes(count, fractions))
    return count // test if test else 1


def val_fold_count(count: int, fractions: Sequence[float]) -> int:
    """How many disjoint validation blocks the ``count`` items' train + val part holds."""
    sizes = _sizes(count, fractions)
    val = sizes[1] if len(sizes) > 1 else 0
    return (count - _test_size(sizes)) // val if val else 1


def _rotate(items: list[T], shift: int) -> list[T]:
    return items[shift:] + items[:shift]


def _cut(
    ordered: list[T], fractions: Sequence[float], fold: int, val_fold: int = 0
) -> dict[str, list[T]]:
    """Cut the shuffled sequence into train / val / test after rotating it left by ``fold``
    test-sized blocks, and its train + val part by ``val_fold`` val-sized blocks."""
    folds = fold_count(len(ordered), fractions)
    if not 0 <= fold < folds:
        raise FoldError(
            f"fold {fold} does not exist: {len(ordered)} items split {tuple(fractions)} give "
            f"folds 0-{folds - 1}"
        )
    val_folds = val_fold_count(len(ordered), fractions)
    if not 0 <= val_fold < val_folds:
        raise FoldError(
            f"val_fold {val_fold} does not exist: the train + val items of {len(ordered)} "
            f"split {tuple(fractions)} give val folds 0-{val_folds - 1}",
            setting="val_fold",
        )
    sizes = _sizes(len(ordered), fractions)
    ordered = _rotate(ordered, fold * _test_size(sizes))
    known = sizes[0] + sizes[1] if len(sizes) > 1 else sizes[0]
    ordered = _rotate(ordered[:known], val_fold * (known - sizes[0])) + ordered[known:]
    out, start = {}, 0
    for name, size in zip(SPLITS, sizes, strict=False):
        out[name] = sorted(ordered[start : start + size], key=str)
        start += size
    return out


def random_split(
    items: Sequence[T], fractions: Sequence[float], seed: int, fold: int = 0, val_fold: int = 0
) -> dict[str, list[T]]:
    order = sorted(range(len(items)), key=lambda i: str(items[i]))
    rng = np.random.default_rng(seed)
    shuffled = [items[order[i]] for i in rng.permutation(len(order))]
    return _cut(shuffled, fractions, fold, val_fold)


def stratified_split(
    items: Sequence[T],
    labels: Sequence[Hashable],
    fractions: Sequence[float],
    seed: int,
    fold: int = 0,
    val_fold: int = 0,
) -> dict[str, list[T]]:
    """Every split gets each label in proportion, and the split sizes follow ``fractions``.

    Each label's items are shuffled and spread evenly along one sequence (an item at rank r of
    its label's n sits at (r + 0.5) / n); cutting that sequence at the split sizes gives every
    split its share of every label, also when a label has fewer items than there are splits.
    """
    by_label: dict[Hashable, list[T]] = defaultdict(list)
    for item, label in zip(items, labels, strict=True):
        by_label[label].append(item)
    rng = np.random.default_rng(seed)
    keyed = []
    for label in sorted(by_label, key=str):
        group = sorted(by_label[label], key=str)
        offset = rng.uniform(0, 1)  # labels interleave differently for each seed
        for rank, i in enumerate(rng.permutation(len(group))):
            keyed.append(((rank + offset) / len(group), str(group[i]), group[i]))
    ordered = [item for _, _, item in sorted(keyed, key=lambda k: (k[0], k[1]))]
    return _cut(ordered, fractions, fold, val_fold)


def grouped_split(
    items: Sequence[T],
    groups: Sequence[Hashable],
    fractions: Sequence[float],
    seed: int,
    fold: int = 0,
    val_fold: int = 0,
) -> dict[str, list[T]]:
    """Whole groups go to one split (e.g. the 16 views of one car), so none straddles two; folds
    count groups."""
    members: dict[Hashable, list[T]] = defaultdict(list)
    for item, group in zip(items, groups, strict=True):
        members[group].append(item)
    parts = random_split(sorted(members, key=str), fractions, seed, fold, val_fold)
    return {
        name: sorted((item for group in part for item in members[group]), key=str)
        for name, part in parts.items()
    }
