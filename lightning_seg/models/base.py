"""What every network returns, and the padding helper for networks with a fixed stride."""

from typing import NamedTuple

from torch import Tensor

from lightning_seg.preprocessing import pad_to_stride


class AuxiliaryOutput(NamedTuple):
    """Returned in training mode by networks with auxiliary (deep-supervision) heads.

    The task adds ``weight * loss(aux_logits)`` for each auxiliary head, so it needs to know
    nothing about the network that produced them. In eval mode networks return plain logits.
    """

    logits: Tensor
    auxiliary: tuple[tuple[Tensor, float], ...]


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
    """Pad H and W up to a multiple of the stride; return the original size to crop back."""
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    if pad_h or pad_w:
        # Reflection keeps the image statistics at the border; fall back for tiny inputs.
        x = pad_to_stride(
            x, multiple, "reflect" if pad_h < height and pad_w < width else "replicate"
        )
    return x, (height, width)


def crop_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple` on the network's output."""
    return x[..., : size[0], : size[1]]
