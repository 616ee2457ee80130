"""Test-time views: each maps back exactly, ``d4`` covers the eight symmetries of the square, and
``flips_scales`` runs the flips at three input sizes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from lightning_seg.tta import TTA_VIEWS, rescaled_size, view_averaged


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


def test_rescaled_sizes_stay_multiples_of_the_network_stride() -> None:
    assert rescaled_size((256, 256), 0.875) == (224, 224)
    assert rescaled_size((256, 352), 1.125) == (288, 384)
    assert rescaled_size((20, 300), 0.875) == (32, 256)


def size_recorder(seen: list[tuple[int, int]]) -> Callable[[Tensor], Tensor]:
    """A stand-in network that notes the size of every input it is run on."""

    def network(images: Tensor) -> Tensor:
        seen.append((images.shape[-2], images.shape[-1]))
        return images[:, :1]

    return network


def test_flips_scales_runs_each_flip_at_three_sizes_and_maps_back_to_the_input_size() -> None:
    seen: list[tuple[int, int]] = []
    recorder = size_recorder(seen)
    images = torch.rand(2, 3, 256, 384)
    averaged = view_averaged(recorder, images, "flips_scales", binary=True)
    assert averaged.shape == (2, 1, 256, 384)
    assert sorted(set(seen)) == [(224, 320), (256, 384), (288, 448)]
    assert len(seen) == 12


def test_flips_scales_of_a_smooth_image_matches_flips_closely_but_not_exactly() -> None:
    """Resizing a smooth image down and back loses little, so a pixel-wise network's averaged
    map stays close to the one-size average; a ramp in x stays a ramp in x."""
    ramp = torch.linspace(-2, 2, 384).view(1, 1, 1, 384).expand(1, 3, 256, 384).contiguous()

    def pixelwise(images: Tensor) -> Tensor:
        return images[:, :1] * 3

    multi = view_averaged(pixelwise, ramp, "flips_scales", binary=True)
    single = view_averaged(pixelwise, ramp, "flips", binary=True)
    assert not torch.equal(multi, single)
    assert torch.allclose(multi, single, atol=0.05)


def test_known_logits_replace_only_the_identity_view_at_the_input_size() -> None:
    calls: list[tuple[int, int]] = []
    network = size_recorder(calls)
    images = torch.rand(1, 3, 256, 256)
    view_averaged(network, images, "flips_scales", binary=True, logits=images[:, :1])
    assert len(calls) == 11
    assert calls.count((256, 256)) == 3


def test_a_tile_too_small_to_rescale_runs_each_view_once() -> None:
    """64 x 96 times 7/8 or 9/8 rounds back onto 64 x 96: the flips run once, not three times."""
    seen: list[tuple[int, int]] = []
    view_averaged(size_recorder(seen), torch.rand(1, 3, 64, 96), "flips_scales", binary=True)
    assert seen == [(64, 96)] * 4


def test_every_named_tta_choice_has_its_views():
    from lightning_seg.choices import TTA_NAMES

    assert set(TTA_VIEWS) == set(TTA_NAMES)
