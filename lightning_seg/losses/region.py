"""Region losses taken from ``segmentation_models_pytorch.losses`` (well kept, well tested).

They are wrapped only to share the task's loss interface ``loss(logits, target, weight=None)``;
a per-pixel weight map has no meaning for an overlap measure and is ignored.
"""

from __future__ import annotations

from segmentation_models_pytorch.losses import DiceLoss as SMPDiceLoss
from torch import Tensor, nn


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
