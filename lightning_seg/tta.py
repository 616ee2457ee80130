"""Test-time augmentation: probabilities averaged over transformed copies, each mapped back first.

Shared by ``test`` (the task's ``tta`` setting) and file prediction, so a checkpoint scores the
same way in both. Averaging probabilities, not logits or labels, keeps a confident view from
being outvoted by an unsure one only as much as their confidence says.

A view is a transpose (swap height and width) followed by flips; ``d4`` is all eight symmetries
of the square (the flips and the right-angle rotations), for networks trained with
``RandomRotate90``, at twice the cost of ``flips`` (on PH2 it measured no gain over ``flips``).
A fully convolutional network takes a transposed non-square input as readily as the original,
so every view also works on tiles that are not square.

``flips_scales`` also runs the four flips on the input resized by 7/8 and 9/8 (each side rounded
to a multiple of 32, so every encoder's stride divides it) and resizes the probabilities back:
lesions drawn a little smaller and larger than in training (a size that rounds back onto the
input's runs once). On four PH2 validation checkpoints (two EfficientNet-Lite0, two Lite2) it
raised val IoU by 0.003-0.007 over ``flips``, at three times the passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


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
    "flips_scales": _FLIPS,
}

#: The input scales each setting runs its views at (1.0 alone unless listed).
TTA_SCALES: dict[str, tuple[float, ...]] = {"flips_scales": (0.875, 1.0, 1.125)}

#: Rescaled sides are rounded to a multiple of this, the largest stride of the shipped networks.
SCALE_MULTIPLE = 32


def rescaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``size`` times ``scale``, each side rounded to the nearest multiple of ``SCALE_MULTIPLE``."""
    height, width = (max(1, round(side * scale / SCALE_MULTIPLE)) * SCALE_MULTIPLE for side in size)
    return height, width


def resized(images: Tensor, size: tuple[int, int]) -> Tensor:
    """``images`` (N x C x H x W) resized bilinearly to ``size`` (as they are if already so)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)


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
    size = (images.shape[-2], images.shape[-1])
    # Each input size once: on small tiles the rounded scales fall back onto the input's size.
    sizes = dict.fromkeys(
        size if scale == 1.0 else rescaled_size(size, scale)
        for scale in TTA_SCALES.get(tta, (1.0,))
    )
    total: Tensor | None = None
    count = 0
    for scaled_size in sizes:
        scaled = resized(images, scaled_size)
        for view in views:
            known = logits is not None and scaled_size == size and view == _IDENTITY
            out = activate(logits if known else network(view.apply(scaled)), binary)
            out = resized(view.invert(out), size)
            total = out if total is None else total.add_(out)
            count += 1
    assert total is not None
    return total.div_(count)
