"""Test-time augmentation: probabilities averaged over transformed copies, each mapped back first.

Shared by ``test`` (the task's ``tta`` setting) and file prediction, so a checkpoint scores the
same way in both. Averaging probabilities, not logits or labels, keeps a confident view from
being outvoted by an unsure one only as much as their confidence says.

A view is a transpose (swap height and width) followed by flips; ``d4`` is all eight symmetries
of the square (the flips and the right-angle rotations), for networks trained with
``RandomRotate90``, at twice the cost of ``flips`` (on PH2 it measured no gain over ``flips``).
A fully convolutional network takes a transposed non-square input as readily as the original,
so every view also works on tiles that are not square.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

TTA = Literal["none", "hflip", "vflip", "flips", "d4"]


class View(NamedTuple):
    """One test-time view of an N x C x H x W batch: optionally transposed, then flipped."""

    transpose: bool = False
    flip: tuple[int, ...] = ()

    def apply(self, images: Tensor) -> Tensor:
        out = images.transpose(2, 3) if self.transpose else images
        return out.flip(self.flip) if self.flip else out

    def invert(self, images: Tensor) -> Tensor:
        out = images.flip(self.flip) if self.flip else images
        return out.transpose(2, 3) if self.transpose else out


# Flips name the tensor dims of N x C x H x W: 3 is left-right, 2 is up-down.
_IDENTITY, _HFLIP, _VFLIP = View(), View(flip=(3,)), View(flip=(2,))
_FLIPS = (_IDENTITY, _HFLIP, _VFLIP, View(flip=(2, 3)))

#: The views whose probabilities each setting averages.
TTA_VIEWS: dict[str, tuple[View, ...]] = {
    "none": (_IDENTITY,),
    "hflip": (_IDENTITY, _HFLIP),
    "vflip": (_IDENTITY, _VFLIP),
    "flips": _FLIPS,
    "d4": _FLIPS + tuple(View(True, view.flip) for view in _FLIPS),
}


def activate(logits: Tensor, binary: bool) -> Tensor:
    """Sigmoid (binary, one logit) or softmax over classes, in float32."""
    logits = logits.float()
    return torch.sigmoid(logits) if binary else torch.softmax(logits, dim=1)


def view_averaged(
    network: Callable[[Tensor], Tensor],
    images: Tensor,
    tta: str,
    binary: bool,
    logits: Tensor | None = None,
) -> Tensor:
    """Probabilities N x C x H x W of ``network`` averaged over the views ``tta`` names.

    ``logits``: the network's output on ``images`` as they are, when the caller already has it
    (``test`` computed it for the loss), so the identity view is not run a second time.
    """
    views = TTA_VIEWS[tta]
    total: Tensor | None = None
    for view in views:
        known = logits is not None and view == _IDENTITY
        out = view.invert(activate(logits if known else network(view.apply(images)), binary))
        total = out if total is None else total.add_(out)
    assert total is not None
    return total.div_(len(views))
