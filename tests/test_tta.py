"""Test-time views: each maps back exactly, and ``d4`` covers the eight symmetries of the square."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lightning_seg.tta import TTA_VIEWS, view_averaged


@pytest.mark.parametrize("tta", list(TTA_VIEWS))
def test_every_view_maps_back_to_the_original_layout(tta: str) -> None:
    images = torch.randn(2, 3, 5, 7)
    for view in TTA_VIEWS[tta]:
        assert torch.equal(view.invert(view.apply(images)), images)


def test_d4_sees_eight_different_views_including_the_right_angle_rotations() -> None:
    square = torch.arange(16.0).view(1, 1, 4, 4)
    seen = {tuple(view.apply(square).flatten().tolist()) for view in TTA_VIEWS["d4"]}
    assert len(seen) == 8
    for turns in range(4):
        assert tuple(torch.rot90(square, turns, dims=(2, 3)).flatten().tolist()) in seen


def test_d4_averages_a_position_dependent_network_into_a_symmetric_map() -> None:
    """A network that ignores its input and paints a fixed ramp is averaged over all symmetries,
    so its TTA output is invariant under transposes and flips (and differs from a single view)."""
    ramp = torch.linspace(-3, 3, 36).view(1, 1, 6, 6)

    def painter(images: Tensor) -> Tensor:
        return ramp.expand(images.shape[0], 1, *images.shape[2:])

    images = torch.zeros(1, 3, 6, 6)
    averaged = view_averaged(painter, images, "d4", binary=True)
    assert not torch.allclose(averaged, torch.sigmoid(ramp))
    for other in (averaged.transpose(2, 3), averaged.flip(2), averaged.flip(3)):
        assert torch.allclose(averaged, other, atol=1e-6)
