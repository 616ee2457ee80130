"""Seeded splits: deterministic, proportional, stratified and grouped."""

from __future__ import annotations

from collections import Counter

from lightning_seg.data.splits import grouped_split, random_split, stratified_split


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
