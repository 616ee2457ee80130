"""Bootstrap error bars of the dataset-level IoU from per-image counts, as small pure functions.

A split of tens of images gives an IoU that moves by a few hundredths with the draw of images,
so a score needs its interval, and two models scored on the same images need the interval of
their *difference*: resampling both with the same images (a paired bootstrap) cancels what the
images share (an easy or a hard split) and tells apart models whose own intervals overlap.

Every function takes per-image counts: ``intersections`` and ``unions`` of shape
images x classes (the binary foreground is one class). Resamples come from a generator of their
own, seeded, so the same counts give the same interval in every run and the caller's RNG is left
alone.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bootstrap_weights(images: int, resamples: int = 2000, seed: int = 0) -> Tensor:
    """resamples x images: how many times each image is drawn (with replacement) in each
    resample; a resample's counts are then one matrix product."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(images, (resamples, images), generator=generator)
    weights = torch.zeros(resamples, images, dtype=torch.float64)
    weights.scatter_add_(1, picks, torch.ones_like(picks, dtype=torch.float64))
    return weights


def macro_iou(intersections: Tensor, unions: Tensor) -> Tensor:
    """Each row's IoU, the mean over its classes present (union > 0); 0.0 where none is."""
    present = unions > 0
    iou = torch.where(present, intersections / unions.clamp_min(1), 0.0)
    return iou.sum(1) / present.sum(1).clamp_min(1)


def dataset_iou(intersections: Tensor, unions: Tensor, weights: Tensor | None = None) -> Tensor:
    """The dataset-level IoU (macro mean over the classes present) of images x classes counts,
    or of each resample when ``weights`` (resamples x images) is given."""
    intersections, unions = intersections.double(), unions.double()
    if weights is None:
        return macro_iou(intersections.sum(0, keepdim=True), unions.sum(0, keepdim=True))[0]
    return macro_iou(weights @ intersections, weights @ unions)


def central_interval(scores: Tensor, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` quantiles of bootstrap scores (the percentile interval)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    low, high = torch.quantile(scores.double(), torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(low), float(high)


def canonical_order(intersections: Tensor, unions: Tensor) -> tuple[Tensor, Tensor]:
    """The rows sorted by their values: the same images give the same resamples whatever order
    (or number of processes) they were scored in."""
    counts = torch.cat([intersections.double(), unions.double()], 1)
    for column in reversed(range(counts.shape[1])):
        counts = counts[torch.sort(counts[:, column], stable=True).indices]
    inter, union = counts.chunk(2, dim=1)
    return inter, union


def iou_interval(
    intersections: Tensor,
    unions: Tensor,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """A ``confidence`` bootstrap interval of the dataset-level IoU, images resampled."""
    intersections, unions = canonical_order(intersections.cpu(), unions.cpu())
    weights = bootstrap_weights(len(intersections), resamples, seed)
    return central_interval(dataset_iou(intersections, unions, weights), confidence)


def paired_difference(
    a: tuple[Tensor, Tensor],
    b: tuple[Tensor, Tensor],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """IoU(a) - IoU(b) of two models' (intersections, unions) on the same images, row i being
    the same image in both, and the ``confidence`` bootstrap interval of that difference with
    both resampled by the same draws of images."""
    if a[0].shape[0] != b[0].shape[0]:
        raise ValueError(f"paired counts need the same images, got {len(a[0])} and {len(b[0])}")
    weights = bootstrap_weights(len(a[0]), resamples, seed)
    difference = float(dataset_iou(*a) - dataset_iou(*b))
    spread = dataset_iou(*a, weights) - dataset_iou(*b, weights)
    return (difference, *central_interval(spread, confidence))
