"""Per-pixel losses written here because they must take a per-pixel weight map and ``ignore_index``.

PyTorch's own functional losses do the arithmetic; these classes only add the shared interface
``loss(logits, target, weight=None)`` with ``target`` an N x H x W tensor of class ids.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def valid_pixels(target: Tensor, ignore_index: int | None) -> Tensor:
    """Float mask of the pixels that count (1) and those to ignore (0)."""
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.float32)
    return (target != ignore_index).float()


def weighted_mean(loss: Tensor, valid: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of a per-pixel loss over the valid pixels, each scaled by its weight."""
    if weight is not None:
        loss = loss * weight
    return (loss * valid).sum() / valid.sum().clamp_min(1.0)


class BCELoss(nn.Module):
    """Binary cross-entropy (PyTorch's ``binary_cross_entropy_with_logits``)."""

    modes = ("binary",)

    def __init__(self, ignore_index: int | None = None, pos_weight: float | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.tensor(float(pos_weight))
        )

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        valid = valid_pixels(target, self.ignore_index)
        target = (target * valid.long()).float()  # ignored pixels become 0; valid masks them out
        loss = F.binary_cross_entropy_with_logits(
            logits[:, 0], target, pos_weight=self.pos_weight, reduction="none"
        )
        return weighted_mean(loss, valid, weight)


class CrossEntropyLoss(nn.Module):
    """Multiclass cross-entropy (PyTorch's ``cross_entropy``) with class weights and smoothing.

    ``class_weights: median_frequency`` uses SegNet's median-frequency balancing weights of the
    training masks, which the task installs (:meth:`set_class_weights`) from its
    ``class_weights``: the CLI links them from the datamodule, as it does ``num_classes``.
    """

    modes = ("multiclass",)

    def __init__(
        self,
        ignore_index: int | None = None,
        class_weights: list[float] | Literal["median_frequency"] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.needs_class_weights = class_weights == "median_frequency"
        if self.needs_class_weights:
            class_weights = None
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer(
            "class_weights", None if class_weights is None else torch.tensor(class_weights)
        )

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        valid = valid_pixels(target, self.ignore_index)
        safe_target = target * valid.long()  # ignored pixels point at class 0; valid masks them
        loss = F.cross_entropy(
            logits,
            safe_target,
            weight=self.class_weights,
            label_smoothing=self.label_smoothing,
            reduction="none",
        )
        if weight is not None:
            loss = loss * weight
        # With class weights PyTorch's mean divides by the summed weights of the targets.
        norm = valid if self.class_weights is None else valid * self.class_weights[safe_target]
        return (loss * valid).sum() / norm.sum().clamp_min(1e-12)

    def set_class_weights(self, weights: list[float]) -> None:
        """Install class weights derived from the data (the task's hyper-parameters keep them)."""
        tensor = torch.tensor(weights, dtype=torch.float32)
        self.register_buffer("class_weights", tensor, persistent=False)
