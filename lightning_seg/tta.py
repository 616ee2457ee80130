"""Test-time augmentation: probabilities averaged over flipped copies, each flipped back first.

Shared by ``test`` (the task's ``tta`` setting) and file prediction, so a checkpoint scores the
same way in both. Averaging probabilities, not logits or labels, keeps a confident view from
being outvoted by an unsure one only as much as their confidence says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

TTA = Literal["none", "hflip", "vflip", "flips"]

#: The flips (tensor dims of N x C x H x W) whose probabilities are averaged.
TTA_FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "hflip": ((), (3,)),
    "vflip": ((), (2,)),
    "flips": ((), (3,), (2,), (2, 3)),
}


def activate(logits: Tensor, binary: bool) -> Tensor:
    """Sigmoid (binary, one logit) or softmax over classes, in float32."""
    logits = logits.float()
    return torch.sigmoid(logits) if binary else torch.softmax(logits, dim=1)


def flip_averaged(
    network: Callable[[Tensor], Tensor], images: Tensor, tta: str, binary: bool
) -> Tensor:
    """Probabilities N x C x H x W of ``network`` averaged over the flips ``tta`` names."""
    flips = TTA_FLIPS[tta]
    total: Tensor | None = None
    for dims in flips:
        out = activate(network(images.flip(dims) if dims else images), binary)
        out = out.flip(dims) if dims else out
        total = out if total is None else total.add_(out)
    assert total is not None
    return total.div_(len(flips))
