"""Weakly-supervised regularised loss: a supervised loss plus sparsity and contiguity priors.

``total = supervised + lam * (sparsity + gamma * contiguity)``, where, on the predicted
foreground probability ``p`` (binary: sigmoid; multiclass: the summed non-background softmax
probabilities, i.e. ``1 - p(class 0)``):

* sparsity is the L1 mean of ``p`` over the valid pixels: foreground should be rare;
* contiguity is its total variation, ``mean |p[i+1, j] - p[i, j]| + mean |p[i, j+1] - p[i, j]|``
  over the neighbouring pairs whose two pixels are valid: foreground should come in blobs.

Written here: no well-kept library offers this combination. The supervised term is any loss of
the registry, built with ``build_loss`` for the same mode and ``ignore_index``; it alone sees the
weight map (the priors are about the prediction's shape, not about how much a pixel counts).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_seg.errors import ConfigurationError
from lightning_seg.losses.pixelwise import valid_pixels


def foreground_probability(logits: Tensor, mode: str) -> Tensor:
    """Probability N x H x W that a pixel is foreground (any class but background 0)."""
    if mode == "binary":
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=1)[:, 1:].sum(dim=1)


def sparsity(prob: Tensor, valid: Tensor) -> Tensor:
    """L1 mean of the foreground probability over the valid pixels (0 when there are none)."""
    return (prob * valid).sum() / valid.sum().clamp_min(1.0)


def contiguity(prob: Tensor, valid: Tensor) -> Tensor:
    """Mean absolute difference between vertical, plus between horizontal, valid neighbours."""
    total = prob.new_zeros(())
    for dim in (-2, -1):
        size = prob.shape[dim]
        if size < 2:
            continue
        diff = (prob.narrow(dim, 1, size - 1) - prob.narrow(dim, 0, size - 1)).abs()
        pairs = valid.narrow(dim, 1, size - 1) * valid.narrow(dim, 0, size - 1)
        total = total + (diff * pairs).sum() / pairs.sum().clamp_min(1.0)
    return total


class WSRLoss(nn.Module):
    """Supervised loss + ``lam * (sparsity + gamma * contiguity)`` of the foreground probability.

    ``supervised`` is a registry spec (``"bce"``, ``"ce+dice"``, a list of dicts); ``None`` picks
    ``bce`` (binary) or ``ce`` (multiclass). ``lam = 0`` gives the supervised loss exactly.
    """

    modes = ("binary", "multiclass")

    def __init__(
        self,
        mode: str,
        ignore_index: int | None = None,
        supervised: str | list[dict[str, Any]] | None = None,
        lam: float = 0.1,
        gamma: float = 1.0,
    ) -> None:
        super().__init__()
        from lightning_seg.losses import build_loss, parse_spec  # the registry imports us

        if lam < 0 or gamma < 0:
            raise ConfigurationError(f"wsr: lam and gamma must be >= 0; got {lam}, {gamma}")
        if supervised is None:
            supervised = "bce" if mode == "binary" else "ce"
        if any(item["name"] == "wsr" for item in parse_spec(supervised)):
            raise ConfigurationError("wsr: the supervised loss cannot itself be 'wsr'")
        self.mode = mode
        self.ignore_index = ignore_index
        self.lam = float(lam)
        self.gamma = float(gamma)
        self.supervised = build_loss(supervised, mode, ignore_index)  # type: ignore[arg-type]

    def regulariser(self, logits: Tensor, target: Tensor) -> Tensor:
        """``sparsity + gamma * contiguity`` of the predicted foreground probability."""
        prob = foreground_probability(logits, self.mode)
        valid = valid_pixels(target, self.ignore_index)
        return sparsity(prob, valid) + self.gamma * contiguity(prob, valid)

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        loss = self.supervised(logits, target, weight)
        if self.lam == 0:
            return loss
        return loss + self.lam * self.regulariser(logits, target)
