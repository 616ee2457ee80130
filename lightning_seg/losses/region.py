"""Region losses taken from ``segmentation_models_pytorch.losses`` (well kept, well tested).

They are wrapped only to share the task's loss interface ``loss(logits, target, weight=None)``;
a per-pixel weight map has no meaning for an overlap measure and is ignored. The few lines
written here work around edge cases of SMP (see each class).
"""

from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import DiceLoss as SMPDiceLoss
from segmentation_models_pytorch.losses import LovaszLoss as SMPLovaszLoss
from segmentation_models_pytorch.losses import TverskyLoss as SMPTverskyLoss
from torch import Tensor, nn

from lightning_seg.errors import ConfigurationError


class DiceLoss(nn.Module):
    """Soft Dice loss, 1 - Dice, from SMP; ``smooth`` keeps empty masks finite."""

    modes = ("binary", "multiclass")

    def __init__(
        self,
        mode: str,
        ignore_index: int | None = None,
        smooth: float = 1.0,
        log_loss: bool = False,
    ) -> None:
        super().__init__()
        self.loss = SMPDiceLoss(
            mode, from_logits=True, smooth=smooth, log_loss=log_loss, ignore_index=ignore_index
        )

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        return self.loss(logits, target)


class TverskyLoss(nn.Module):
    """Tversky loss from SMP: ``(1 - TI)^gamma``, TI = TP / (TP + alpha FP + beta FN).

    ``alpha`` weighs false positives, ``beta`` false negatives (alpha = beta = 0.5 is Dice);
    ``gamma != 1`` is the focal Tversky loss. SMP raises the loss to ``gamma`` itself, which gives
    NaN gradients when the loss is exactly 0 (every class absent) and ``gamma < 1``; so SMP runs
    with ``gamma = 1`` and the power is taken here, on the loss clamped away from 0.
    """

    modes = ("binary", "multiclass")

    def __init__(
        self,
        mode: str,
        ignore_index: int | None = None,
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 1.0,
        smooth: float = 1.0,
        log_loss: bool = False,
    ) -> None:
        super().__init__()
        if gamma <= 0:
            raise ConfigurationError(f"tversky: gamma must be > 0; got {gamma}")
        self.gamma = float(gamma)
        self.loss = SMPTverskyLoss(
            mode,
            from_logits=True,
            smooth=smooth,
            log_loss=log_loss,
            ignore_index=ignore_index,
            alpha=alpha,
            beta=beta,
            gamma=1.0,
        )

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        loss = self.loss(logits, target)
        if self.gamma == 1.0:
            return loss
        return loss.clamp_min(1e-7).pow(self.gamma)


class LovaszLoss(nn.Module):
    """Lovasz hinge (binary) / Lovasz-softmax (multiclass) loss from SMP, a surrogate of IoU.

    SMP returns an empty tensor instead of a scalar when no pixel is valid (multiclass), and its
    per-image mean breaks on a fully ignored image; so images without a valid pixel are skipped
    here, and a batch without any gives a zero that keeps the graph.
    """

    modes = ("binary", "multiclass")

    def __init__(self, mode: str, ignore_index: int | None = None, per_image: bool = False) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.per_image = per_image
        self.loss = SMPLovaszLoss(mode, per_image=False, ignore_index=ignore_index)

    def _has_valid(self, target: Tensor) -> bool:
        return self.ignore_index is None or bool((target != self.ignore_index).any())

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        if self.per_image:
            pairs = [(lg[None], t[None]) for lg, t in zip(logits, target, strict=True)]
        else:
            pairs = [(logits, target)]
        losses = [self.loss(lg, t) for lg, t in pairs if self._has_valid(t)]
        if not losses:
            return logits.sum() * 0.0
        return torch.stack(losses).mean()
