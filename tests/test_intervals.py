"""Bootstrap intervals from per-image counts: the paired difference of two models, and the
image bookkeeping of the IoU interval metric (dataset indices, padded repeats)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_seg.intervals import dataset_iou, iou_interval, paired_difference
from lightning_seg.metrics import IoUInterval


def counts(seed: int, images: int, classes: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (intersection, union) of a model scoring 0.6-0.95 per image."""
    rng = np.random.default_rng(seed)
    unions = rng.integers(500, 5000, size=(images, classes)).astype(np.float64)
    intersections = np.floor(unions * rng.uniform(0.6, 0.95, size=(images, classes)))
    return torch.from_numpy(intersections), torch.from_numpy(unions)


def numpy_paired_interval(a, b, resamples: int = 2000) -> tuple[float, float]:
    """IoU(a) - IoU(b) over images drawn with replacement, the same draw for both (NumPy)."""
    rng = np.random.default_rng(7)
    (ia, ua), (ib, ub) = [(i.numpy()[:, 0], u.numpy()[:, 0]) for i, u in (a, b)]
    differences = []
    for _ in range(resamples):
        pick = rng.integers(len(ia), size=len(ia))
        differences.append(ia[pick].sum() / ua[pick].sum() - ib[pick].sum() / ub[pick].sum())
    return float(np.quantile(differences, 0.025)), float(np.quantile(differences, 0.975))


def test_paired_difference_matches_an_independent_numpy_paired_bootstrap() -> None:
    a = counts(1, 40)
    b = (torch.floor(a[0] * torch.linspace(0.9, 1.05, 40).unsqueeze(1)).clamp(max=a[1]), a[1])
    difference, low, high = paired_difference(a, b)
    ref_low, ref_high = numpy_paired_interval(a, b)
    assert difference == pytest.approx(float(dataset_iou(*a) - dataset_iou(*b)))
    assert low < difference < high
    width = ref_high - ref_low
    assert low == pytest.approx(ref_low, abs=0.15 * width)
    assert high == pytest.approx(ref_high, abs=0.15 * width)


def test_paired_interval_separates_models_whose_own_intervals_overlap() -> None:
    # b is a on every image but 2 % of each union worse: a small, consistent gain that the
    # spread of images hides from each model's own interval and pairing reveals.
    a = counts(2, 40)
    b = (a[0] - 0.02 * a[1], a[1])
    a_low, a_high = iou_interval(*a)
    b_low, b_high = iou_interval(*b)
    assert a_low < b_high and b_low < a_high  # the intervals overlap
    difference, low, high = paired_difference(a, b)
    assert difference == pytest.approx(0.02, abs=1e-9)
    assert 0.0 < low <= high  # a is better, shown


def test_paired_difference_of_a_model_with_itself_is_exactly_zero() -> None:
    a = counts(3, 25, classes=4)
    assert paired_difference(a, a) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same images"):
        paired_difference(a, counts(3, 24, classes=4))


def batch(seed: int, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = (torch.rand(images, 8, 8, generator=generator) > 0.5).long()
    preds = torch.where(torch.rand(images, 8, 8, generator=generator) > 0.8, 1 - target, target)
    return preds, target


def test_image_counts_hold_each_image_once_in_index_order() -> None:
    preds, target = batch(0, 6)
    padded = IoUInterval(1)
    # Two processes of a distributed sampler: images 0-5 split 4 / 4, image 0 repeated as padding.
    padded.update(preds[[4, 2, 0, 5]], target[[4, 2, 0, 5]], index=torch.tensor([4, 2, 0, 5]))
    padded.update(preds[[1, 3, 0]], target[[1, 3, 0]], index=torch.tensor([1, 3, 0]))
    once = IoUInterval(1)
    once.update(preds, target, index=torch.arange(6))
    assert padded.compute() == once.compute()
    assert padded.image_counts is not None and once.image_counts is not None
    assert padded.image_counts.indices.tolist() == [0, 1, 2, 3, 4, 5]
    assert torch.equal(padded.image_counts.intersections, once.image_counts.intersections)
    expected = [
        ((p == 1) & (t == 1)).sum().item() / ((p == 1) | (t == 1)).sum().item()
        for p, t in zip(preds, target, strict=True)
    ]
    assert padded.image_counts.image_iou().tolist() == pytest.approx(expected)


def test_image_counts_without_indices_keep_every_image_in_order() -> None:
    preds, target = batch(1, 5)
    metric = IoUInterval(1)
    metric.update(preds, target)
    metric.update(preds[:2], target[:2])  # scored again: without names they are new images
    metric.compute()
    assert metric.image_counts is not None
    assert metric.image_counts.indices.tolist() == [-1] * 7
