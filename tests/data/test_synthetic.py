"""The synthetic datamodule: deterministic, configurable, and not solvable by a threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_seg.data import SyntheticDataModule
from lightning_seg.data.synthetic import generate


def test_same_seed_gives_identical_data():
    first_images, first_masks = generate(seed=7, split="train", count=6, size=48)
    again_images, again_masks = generate(seed=7, split="train", count=6, size=48)
    np.testing.assert_array_equal(first_images, again_images)
    np.testing.assert_array_equal(first_masks, again_masks)


def test_sample_does_not_depend_on_how_many_are_generated():
    few, _ = generate(seed=7, split="train", count=2, size=32)
    many, _ = generate(seed=7, split="train", count=5, size=32)
    np.testing.assert_array_equal(few, many[:2])


def test_seeds_and_splits_differ():
    base, _ = generate(seed=1, split="train", count=2, size=32)
    other_seed, _ = generate(seed=2, split="train", count=2, size=32)
    other_split, _ = generate(seed=1, split="val", count=2, size=32)
    assert not np.allclose(base, other_seed) and not np.allclose(base, other_split)


def test_datamodule_sizes_counts_and_batches():
    dm = SyntheticDataModule(size=40, num_train=10, num_val=4, num_test=3, batch_size=4)
    dm.setup("fit")
    dm.setup("test")
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [10, 4, 3]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 40, 40) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 40, 40) and batch["mask"].dtype == torch.int64
    assert dm.num_classes == 1 and dm.class_names == ["lesion"]


@pytest.mark.parametrize("lesion_classes", [1, 3])
def test_binary_and_multiclass_variants(lesion_classes):
    _, masks = generate(seed=0, split="train", count=40, size=48, num_lesion_classes=lesion_classes)
    assert set(np.unique(masks)) == set(range(lesion_classes + 1))
    dm = SyntheticDataModule(num_lesion_classes=lesion_classes)
    assert dm.num_classes == (1 if lesion_classes == 1 else lesion_classes + 1)
    assert len(dm.class_names) == max(dm.num_classes, 1)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    return float((pred & truth).sum() / max((pred | truth).sum(), 1))


def test_task_is_not_solved_by_a_constant_or_a_one_channel_threshold():
    images, masks = generate(seed=0, split="val", count=64, size=64)
    truth = masks.reshape(-1) > 0
    assert 0.05 < truth.mean() < 0.4  # lesions are neither absent nor everywhere
    assert iou(np.ones_like(truth), truth) < 0.4
    best = 0.0
    channels = [images[:, c].reshape(-1) for c in range(3)] + [images.mean(1).reshape(-1)]
    for values in channels:
        for threshold in np.quantile(values, np.linspace(0.01, 0.99, 99)):
            best = max(best, iou(values < threshold, truth), iou(values > threshold, truth))
    assert best < 0.6, f"a global threshold reaches IoU {best:.3f}: the task is too easy"
