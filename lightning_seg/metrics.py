"""Segmentation metrics as torchmetrics objects, so they accumulate over an epoch and
synchronise across processes in distributed runs."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryJaccardIndex,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)


def build_metrics(num_classes: int, ignore_index: int | None = None) -> MetricCollection:
    """Dataset-level IoU and F1; binary for one logit, macro-averaged otherwise.

    Predictions passed to ``update`` are hard labels (N x H x W), so the binary threshold stays
    the task's decision and is not baked into the metric.
    """
    if num_classes == 1:
        return MetricCollection(
            {
                "iou": BinaryJaccardIndex(ignore_index=ignore_index),
                "f1": BinaryF1Score(ignore_index=ignore_index),
            }
        )
    kwargs = {"num_classes": num_classes, "ignore_index": ignore_index, "average": "macro"}
    return MetricCollection(
        {"iou": MulticlassJaccardIndex(**kwargs), "f1": MulticlassF1Score(**kwargs)}
    )
