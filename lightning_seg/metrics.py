"""Segmentation metrics as torchmetrics objects, so they accumulate over an epoch and
synchronise across processes in distributed runs.

``build_metrics`` returns a ``MetricCollection`` whose ``compute()`` is a flat dict of scalars:

* binary (``num_classes == 1``): ``iou`` and ``f1`` of the foreground over all pixels of the
  epoch pooled (dataset level), and ``iou_per_image``, the mean over images of each image's
  foreground IoU (what PH2 papers report).
* multiclass: ``iou`` and ``f1`` macro-averaged over classes, and ``iou/<class name>`` per class.

Keys come out sorted (``MetricCollection`` sorts its members), as ``metric_names`` lists them.

Conventions (the NumPy reference in ``tests/test_metrics.py`` follows them):

* Pixels whose target is ``ignore_index`` never count, for any metric. ``ignore_index`` must lie
  outside the class ids (e.g. 255, or 11 with classes 0-10): an ignored id that is also a class
  could still be predicted, and torchmetrics would then score it inconsistently (dropped from the
  IoU mean, kept in the F1 mean), so it is rejected.
* A class absent from both prediction and truth over the whole epoch (tp + fp + fn == 0) has no
  defined score: torchmetrics leaves it out of the macro means (weight 0) and reports 0.0 for it
  under ``iou/<name>`` (``zero_division=0``). The binary dataset-level scores are 0.0 likewise
  when the epoch has no foreground at all.
* Per-image IoU: an image whose prediction and truth are both empty scores 1.0 (the model is
  right that there is nothing); an image without any labelled pixel is left out of the mean.
  ``iou_worst_image`` is the lowest of those per-image scores: the failure a user meets first.
* ``iou_ci_low`` / ``iou_ci_high`` (``build_metrics(..., interval=True)``, the test split's): a
  95 % bootstrap interval of ``iou``, images resampled with replacement: the error bar that
  tells whether two runs scored on tens of images differ at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)
from torchmetrics.utilities import dim_zero_cat

from lightning_seg.intervals import iou_interval, macro_iou

BINARY_KEYS = ("f1", "iou", "iou_per_image", "iou_worst_image")
INTERVAL_KEYS = ("iou_ci_low", "iou_ci_high")


class PerImageIoU(Metric):
    """Mean over images of the foreground IoU of each image (binary labels 0/1).

    Kept as two sum-reduced states (sum of scores, number of images) rather than a list of
    scores, so DDP synchronisation is one all-reduce and memory does not grow with the epoch.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    score_sum: Tensor
    num_images: Tensor

    def __init__(self, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.add_state("score_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("num_images", default=torch.tensor(0), dist_reduce_fx="sum")

    def image_scores(self, preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Each image's foreground IoU, and whether it has any labelled pixel (vectorised)."""
        if preds.shape != target.shape or preds.dim() < 2:
            raise ValueError(
                f"preds and target must both be N x H x W, got {tuple(preds.shape)} "
                f"and {tuple(target.shape)}"
            )
        preds, target = preds.flatten(1), target.flatten(1)
        pred_fg, true_fg = preds == 1, target == 1
        if self.ignore_index is None:
            labelled = torch.ones(len(target), dtype=torch.bool, device=target.device)
        else:
            valid = target != self.ignore_index
            pred_fg &= valid
            labelled = valid.any(dim=1)
        intersection = (pred_fg & true_fg).sum(dim=1)
        union = (pred_fg | true_fg).sum(dim=1)
        return torch.where(union > 0, intersection / union.clamp_min(1), 1.0), labelled

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the IoU of each image of a batch of hard labels N x H x W."""
        iou, labelled = self.image_scores(preds, target)
        # Multiply rather than index by the mask: no device sync and a static shape.
        self.score_sum += (iou * labelled).sum().to(self.score_sum.dtype)
        self.num_images += labelled.sum()

    def compute(self) -> Tensor:
        """The mean, or 0.0 before any labelled image (as torchmetrics' ``zero_division``)."""
        if self.num_images == 0:
            return torch.zeros_like(self.score_sum)
        return self.score_sum / self.num_images


class WorstImageIoU(PerImageIoU):
    """The lowest per-image foreground IoU of the epoch (same conventions as PerImageIoU)."""

    higher_is_better = True
    worst: Tensor

    def __init__(self, ignore_index: int | None = None, **kwargs: Any) -> None:
        Metric.__init__(self, **kwargs)
        self.ignore_index = ignore_index
        self.add_state("worst", default=torch.tensor(float("inf")), dist_reduce_fx="min")

    def update(self, preds: Tensor, target: Tensor) -> None:
        iou, labelled = self.image_scores(preds, target)
        scores = torch.where(labelled, iou, torch.full_like(iou, float("inf")))
        if len(scores):
            self.worst = torch.minimum(self.worst, scores.min().to(self.worst.dtype))

    def compute(self) -> Tensor:
        """The minimum, or 0.0 before any labelled image."""
        return torch.where(torch.isinf(self.worst), torch.zeros_like(self.worst), self.worst)


class IoUInterval(Metric):
    """Bootstrap confidence interval of the dataset-level IoU (binary: the foreground's;
    multiclass: the macro mean over the classes present), resampling images with replacement.

    Each image is reduced once to its intersection and union per class; a resample is then a
    weighted sum of those rows, so thousands of resamples cost one matrix product
    (:mod:`lightning_seg.intervals`). (torchmetrics' ``BootStrapper`` instead re-runs the
    wrapped metric on the pixels of every resample, and returns one quantile, not an interval.)

    ``update`` may name each image by its dataset index (``index``): an image scored twice (the
    padding of a distributed sampler) then counts once, and ``image_counts`` (set by
    ``compute``, whose states are synchronised across processes) gives every image's counts in
    index order, for per-image reports and paired comparisons of two models.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    intersections: list[Tensor]
    unions: list[Tensor]
    indices: list[Tensor]

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = None,
        confidence: float = 0.95,
        resamples: int = 2000,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confidence, self.resamples, self.seed = confidence, resamples, seed
        self.add_state("intersections", default=[], dist_reduce_fx="cat")
        self.add_state("unions", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.image_counts: ImageCounts | None = None

    def update(self, preds: Tensor, target: Tensor, index: Tensor | None = None) -> None:
        """Add the per-class intersection and union of each image of a batch N x H x W;
        ``index`` (N): the images' dataset indices, if known (-1 where not)."""
        labels = max(self.num_classes, 2)  # binary labels are 0/1; only class 1 is scored
        preds, target = preds.flatten(1), target.flatten(1)
        valid = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            valid = target != self.ignore_index
        image = torch.arange(len(target), device=target.device).unsqueeze(1) * labels
        size = len(target) * labels

        def counts(keys: Tensor, keep: Tensor) -> Tensor:
            return torch.bincount(keys[keep], minlength=size).view(-1, labels)

        intersection = counts(image + target, valid & (preds == target))
        union = counts(image + preds, valid) + counts(image + target, valid) - intersection
        scored = slice(1, 2) if self.num_classes == 1 else slice(None)
        self.intersections.append(intersection[:, scored].double())
        self.unions.append(union[:, scored].double())
        if index is None:
            index = torch.full((len(target),), -1, device=target.device)
        self.indices.append(index.to(device=target.device, dtype=torch.long).flatten())

    def compute(self) -> dict[str, Tensor]:
        """``iou_ci_low`` and ``iou_ci_high``: the central ``confidence`` quantiles of the IoU
        over the resamples (both 0.0 before any image)."""
        if isinstance(self.intersections, list) and not self.intersections:
            self.image_counts = None
            zero = torch.tensor(0.0, device=self.device)
            return {"iou_ci_low": zero, "iou_ci_high": zero}
        counts = ImageCounts.of(
            dim_zero_cat(self.indices).cpu(),
            dim_zero_cat(self.intersections).cpu(),
            dim_zero_cat(self.unions).cpu(),
        )
        self.image_counts = counts
        low, high = iou_interval(
            counts.intersections, counts.unions, self.confidence, self.resamples, self.seed
        )
        return {
            "iou_ci_low": torch.tensor(low, device=self.device),
            "iou_ci_high": torch.tensor(high, device=self.device),
        }


@dataclass(frozen=True)
class ImageCounts:
    """Per-image intersection and union (images x scored classes) and the images' dataset
    indices (-1 where unknown), ordered by index."""

    indices: Tensor
    intersections: Tensor
    unions: Tensor

    @classmethod
    def of(cls, indices: Tensor, intersections: Tensor, unions: Tensor) -> ImageCounts:
        """Sorted by index, each known index once (a distributed sampler pads a split by
        repeating images); rows of unknown index are all kept, in their order."""
        if (indices >= 0).any():
            order = torch.sort(indices, stable=True).indices
            indices, intersections, unions = indices[order], intersections[order], unions[order]
            keep = torch.ones_like(indices, dtype=torch.bool)
            keep[1:] = (indices[1:] != indices[:-1]) | (indices[1:] < 0)
            indices, intersections, unions = indices[keep], intersections[keep], unions[keep]
        return cls(indices, intersections, unions)

    def image_iou(self) -> Tensor:
        """Each image's IoU: the mean over the classes present in it (prediction or truth);
        1.0 for an image where none is."""
        mean = macro_iou(self.intersections, self.unions)
        return torch.where((self.unions > 0).any(1), mean, 1.0)


class ClasswiseJaccardIndex(MulticlassJaccardIndex):
    """IoU of each class, returned as ``{"iou/<class name>": value}``.

    Does what ``ClasswiseWrapper(MulticlassJaccardIndex(average=None), labels, prefix="iou/")``
    does, but as a plain metric with the same confusion-matrix state as the macro IoU, so the
    collection's compute groups update one matrix for both. The wrapper breaks compute groups in
    torchmetrics 1.9: the group's update count is set on the wrapper, not on the wrapped metric,
    which then warns "compute called before update" at every epoch after a reset.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: list[str],
        ignore_index: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, average=None, ignore_index=ignore_index, **kwargs)
        self.class_names = list(class_names)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        """Per-class IoU keyed by class name (0.0 for a class absent from prediction and truth)."""
        scores = super().compute()
        return {f"iou/{name}": score for name, score in zip(self.class_names, scores, strict=True)}


def resolve_class_names(num_classes: int, class_names: list[str] | None = None) -> list[str]:
    """The given names, checked (one per class, unique), or ``class_0``, ``class_1``, ..."""
    if class_names is None:
        return [f"class_{i}" for i in range(num_classes)]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes: {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be unique (they become metric keys): {names}")
    return names


def metric_names(
    num_classes: int, class_names: list[str] | None = None, interval: bool = False
) -> list[str]:
    """The keys ``build_metrics(...).compute()`` returns, without the stage prefix."""
    extra = list(INTERVAL_KEYS) if interval else []  # sorted after "iou", as its member is
    if num_classes == 1:
        return [*BINARY_KEYS[:2], *extra, *BINARY_KEYS[2:]]
    names = resolve_class_names(num_classes, class_names)
    return ["f1", "iou", *extra, *(f"iou/{name}" for name in names)]


def _check_ignore_index(num_classes: int, ignore_index: int | None) -> None:
    """Fail at construction rather than score an ambiguous label set quietly."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if ignore_index is None:
        return
    # Booleans are ints in Python; True would silently mean "ignore class 1".
    if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
        raise ValueError(f"ignore_index must be an int or None, got {ignore_index!r}")
    labels = 2 if num_classes == 1 else num_classes
    if 0 <= ignore_index < labels:
        raise ValueError(
            f"ignore_index={ignore_index} is also a class id (labels 0..{labels - 1}); use an id "
            "outside them (e.g. 255) so ignored pixels and predicted classes cannot be confused"
        )


def build_metrics(
    num_classes: int,
    ignore_index: int | None = None,
    class_names: list[str] | None = None,
    interval: bool = False,
) -> MetricCollection:
    """Dataset-level IoU and F1 (plus per-image IoU if binary, per-class IoU if multiclass, and
    with ``interval`` the IoU's 95 % bootstrap interval).

    ``update(preds, target)`` takes hard labels N x H x W, so the binary threshold stays the
    task's decision and is not baked into the metric. ``class_names`` are ignored in binary mode.
    ``validate_args`` is off: its checks run ``torch.unique`` (a sort of every pixel, and a
    device sync) per metric and batch, and a label out of range still fails loudly in the
    confusion-matrix ``bincount`` reshape.
    """
    _check_ignore_index(num_classes, ignore_index)
    extra: dict[str, Metric] = {}
    if interval:
        extra["iou_interval"] = IoUInterval(num_classes, ignore_index=ignore_index)
    if num_classes == 1:
        binary = {"ignore_index": ignore_index, "validate_args": False}
        return MetricCollection(
            {
                "iou": BinaryJaccardIndex(**binary),
                "f1": BinaryF1Score(**binary),
                "iou_per_image": PerImageIoU(ignore_index=ignore_index),
                "iou_worst_image": WorstImageIoU(ignore_index=ignore_index),
                **extra,
            }
        )
    names = resolve_class_names(num_classes, class_names)
    multi = {"num_classes": num_classes, "ignore_index": ignore_index, "validate_args": False}
    return MetricCollection(
        {
            "iou": MulticlassJaccardIndex(average="macro", **multi),
            "f1": MulticlassF1Score(average="macro", **multi),
            "iou_per_class": ClasswiseJaccardIndex(class_names=names, **multi),
            **extra,
        }
    )
