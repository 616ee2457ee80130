"""Seeded splits: deterministic, proportional, stratified and grouped."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest

from lightning_seg.data.splits import (
    FoldError,
    fold_count,
    grouped_split,
    random_split,
    stratified_split,
    val_fold_count,
)


def test_random_split_is_deterministic_complete_and_proportional():
    items = [f"img{i:03d}" for i in range(200)]
    first = random_split(items, (0.5, 0.25, 0.25), seed=3)
    assert first == random_split(list(reversed(items)), (0.5, 0.25, 0.25), seed=3)
    assert [len(first[s]) for s in ("train", "val", "test")] == [100, 50, 50]
    assert sorted(i for part in first.values() for i in part) == items
    assert first != random_split(items, (0.5, 0.25, 0.25), seed=4)


def test_stratified_split_keeps_the_label_mix_in_every_split():
    items = [f"img{i:03d}" for i in range(200)]
    labels = ["0"] * 80 + ["1"] * 80 + ["2"] * 40  # PH2's diagnoses: 80 / 80 / 40
    label_of = dict(zip(items, labels, strict=True))
    split = stratified_split(items, labels, (0.5, 0.25, 0.25), seed=0)
    assert Counter(label_of[i] for i in split["train"]) == {"0": 40, "1": 40, "2": 20}
    assert Counter(label_of[i] for i in split["val"]) == {"0": 20, "1": 20, "2": 10}
    assert split == stratified_split(items, labels, (0.5, 0.25, 0.25), seed=0)


def test_grouped_split_never_puts_a_group_in_two_splits():
    items = [f"car{c:02d}_{v:02d}" for c in range(20) for v in range(1, 17)]
    groups = [i.split("_")[0] for i in items]
    split = grouped_split(items, groups, (0.7, 0.15, 0.15), seed=1)
    cars = {name: {i.split("_")[0] for i in part} for name, part in split.items()}
    assert not cars["train"] & cars["val"] and not cars["train"] & cars["test"]
    assert not cars["val"] & cars["test"]
    assert [len(cars[s]) for s in ("train", "val", "test")] == [14, 3, 3]


@pytest.mark.parametrize("count", [200, 160, 13])
def test_folds_test_every_item_exactly_once_and_fold_zero_is_the_plain_split(count):
    items = [f"img{i:03d}" for i in range(count)]
    labels = [str(i % 3) for i in range(count)]
    folds = fold_count(count, (0.5, 0.25, 0.25))
    assert folds == count // round(count / 4)
    splits = [stratified_split(items, labels, (0.5, 0.25, 0.25), 7, fold) for fold in range(folds)]
    assert splits[0] == stratified_split(items, labels, (0.5, 0.25, 0.25), 7)
    tested = [item for split in splits for item in split["test"]]
    assert len(tested) == len(set(tested)) == folds * len(splits[0]["test"])
    for split in splits:  # each fold is a whole split of disjoint parts
        assert sorted(i for part in split.values() for i in part) == items
    for before, after in pairwise(splits):  # each fold validates on the one before its test
        assert after["val"] == before["test"]


def test_folds_keep_the_label_mix_in_every_test_split():
    items = [f"img{i:03d}" for i in range(160)]
    labels = ["0"] * 64 + ["1"] * 64 + ["2"] * 32
    label_of = dict(zip(items, labels, strict=True))
    for fold in range(4):
        test = stratified_split(items, labels, (0.5, 0.25, 0.25), 0, fold)["test"]
        mix = Counter(label_of[i] for i in test)
        assert all(abs(mix[label] - n / 4) <= 1 for label, n in Counter(labels).items())


def test_random_and_grouped_splits_have_folds_too():
    items = [f"car{c:02d}_{v:02d}" for c in range(20) for v in range(1, 5)]
    groups = [i.split("_")[0] for i in items]
    folds = [grouped_split(items, groups, (0.5, 0.25, 0.25), 1, fold) for fold in range(4)]
    tested = [item for split in folds for item in split["test"]]
    assert sorted(tested) == items
    plain = [f"img{i}" for i in range(8)]
    assert (
        random_split(plain, (0.5, 0.25, 0.25), 0, 1)["test"]
        != random_split(plain, (0.5, 0.25, 0.25), 0)["test"]
    )


@pytest.mark.parametrize("fold", [-1, 4])
def test_a_fold_that_does_not_exist_names_the_folds_there_are(fold):
    with pytest.raises(FoldError, match=r"fold -?\d does not exist: 20 items .* give folds 0-3"):
        random_split(list(range(20)), (0.5, 0.25, 0.25), 0, fold)


@pytest.mark.parametrize("count", [160, 13])
def test_val_folds_validate_every_non_test_item_once_and_keep_the_test_split(count):
    items = [f"img{i:03d}" for i in range(count)]
    labels = [str(i % 3) for i in range(count)]
    fractions = (0.5, 0.25, 0.25)
    plain = stratified_split(items, labels, fractions, 7, fold=1)
    folds = val_fold_count(count, fractions)
    assert folds == (count - len(plain["test"])) // len(plain["val"])
    splits = [stratified_split(items, labels, fractions, 7, 1, j) for j in range(folds)]
    assert splits[0] == plain
    validated = [item for split in splits for item in split["val"]]
    assert len(validated) == len(set(validated)) == folds * len(plain["val"])
    assert not set(validated) & set(plain["test"])
    for split in splits:  # the test split never moves; train and val stay disjoint
        assert split["test"] == plain["test"]
        assert sorted(i for part in split.values() for i in part) == items


def test_a_val_fold_that_does_not_exist_names_the_val_folds_there_are():
    with pytest.raises(FoldError, match=r"val_fold 3 does not exist: .* give val folds 0-2"):
        random_split(list(range(20)), (0.5, 0.25, 0.25), 0, 0, 3)
