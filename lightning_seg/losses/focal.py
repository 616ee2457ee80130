"""Focal loss (Lin et al., 2017), binary and multiclass, with ``ignore_index`` and a weight map.

``FL = -alpha_t (1 - p_t)^gamma log p_t``, written here (a few lines) rather than taken from a
library, for two reasons:

* multiclass: the only well-kept implementation, SMP's ``FocalLoss``, treats each class as a
  one-vs-rest sigmoid; that is another loss, which does not reduce to cross-entropy at
  ``gamma = 0``. This is the softmax focal loss.
* binary: torchvision's ``sigmoid_focal_loss`` (and SMP's) compute ``(1 - p_t)^gamma`` as is,
  whose slope is infinite at ``p_t = 1``: with ``0 < gamma < 1`` one saturated pixel makes every
  gradient NaN. Here ``1 - p_t`` is taken as ``-expm1(log p_t)`` (exact near 1) and clamped.
  The tests check the values against torchvision's ``sigmoid_focal_loss``.

``log p_t`` itself comes from PyTorch (``binary_cross_entropy_with_logits``, ``log_softmax``),
the loss is unreduced so that ignored pixels and the weight map apply before the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_seg.errors import ConfigurationError
from lightning_seg.losses.pixelwise import valid_pixels, weighted_mean


def focal_term(log_pt: Tensor, gamma: float) -> Tensor:
    """Per-pixel ``-(1 - p_t)^gamma log p_t`` from ``log p_t``; exactly ``-log p_t`` at gamma 0."""
    if gamma == 0:
        return -log_pt
    one_minus_pt = (-torch.expm1(log_pt)).clamp_min(1e-12)
    return -one_minus_pt.pow(gamma) * log_pt


def softmax_focal_loss(
    logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: Tensor | None = None
) -> Tensor:
    """Per-pixel softmax focal loss, N x H x W; ``alpha`` is a per-class weight (C,) or None.

    ``target`` must hold valid class ids everywhere (callers map ignored pixels to 0 and mask).
    """
    log_pt = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    loss = focal_term(log_pt, gamma)
    return loss if alpha is None else alpha[target] * loss


def sigmoid_focal_loss(
    logits: Tensor, target: Tensor, gamma: float = 2.0, alpha: float | None = None
) -> Tensor:
    """Per-pixel sigmoid focal loss of logits and 0/1 targets of the same shape.

    ``alpha`` weighs the positives, ``1 - alpha`` the negatives; None: no weighting.
    """
    target = target.to(logits.dtype)
    log_pt = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    loss = focal_term(log_pt, gamma)
    return loss if alpha is None else (alpha * target + (1 - alpha) * (1 - target)) * loss


class FocalLoss(nn.Module):
    """Focal loss: cross-entropy scaled by ``(1 - p_t)^gamma`` to focus on the hard pixels.

    ``alpha`` balances foreground and background as in the paper: positives (binary) or every
    non-background class (multiclass, class 0 is background) weigh ``alpha``, background
    ``1 - alpha``; in multiclass mode a list gives one weight per class. ``None`` = no weighting,
    and then ``gamma = 0`` gives BCE (binary) or CE (multiclass) exactly.
    """

    modes = ("binary", "multiclass")

    def __init__(
        self,
        mode: str,
        ignore_index: int | None = None,
        alpha: float | list[float] | None = None,
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if isinstance(alpha, list) and mode == "binary":
            raise ConfigurationError(
                "focal: a list of per-class alphas needs multiclass mode; binary takes one float"
            )
        if isinstance(alpha, int | float) and not 0 <= alpha <= 1:
            raise ConfigurationError(f"focal: alpha must be in [0, 1] or null; got {alpha}")
        if gamma < 0:
            raise ConfigurationError(f"focal: gamma must be >= 0; got {gamma}")
        self.mode = mode
        self.ignore_index = ignore_index
        self.gamma = float(gamma)
        self.alpha = alpha
        self.register_buffer(
            "class_alpha",
            torch.tensor(alpha, dtype=torch.float32) if isinstance(alpha, list) else None,
        )

    def _alpha_per_class(self, num_classes: int, device: torch.device) -> Tensor | None:
        if self.alpha is None:
            return None
        if self.class_alpha is not None:
            if len(self.class_alpha) != num_classes:
                raise ConfigurationError(
                    f"focal: alpha has {len(self.class_alpha)} entries for {num_classes} classes"
                )
            return self.class_alpha
        alpha = torch.full((num_classes,), float(self.alpha), device=device)
        alpha[0] = 1 - float(self.alpha)
        return alpha

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        valid = valid_pixels(target, self.ignore_index)
        safe_target = target * valid.long()  # ignored pixels point at class 0; valid masks them
        if self.mode == "binary":
            alpha = None if self.alpha is None else float(self.alpha)  # type: ignore[arg-type]
            loss = sigmoid_focal_loss(logits[:, 0], safe_target, self.gamma, alpha)
        else:
            alpha = self._alpha_per_class(logits.shape[1], logits.device)
            loss = softmax_focal_loss(logits, safe_target, self.gamma, alpha)
        return weighted_mean(loss, valid, weight)
