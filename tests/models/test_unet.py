"""The hand-written U-Net and its presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_seg.errors import ConfigurationError
from lightning_seg.models import MODELS, build_model


@pytest.mark.parametrize("name", ["unet", "unet_upsample", "unet_convpool"])
@pytest.mark.parametrize("num_classes", [1, 4])
@pytest.mark.parametrize("size", [(64, 64), (75, 111), (250, 333)])
def test_output_shape_matches_input_at_any_size(name, num_classes, size):
    model = build_model(name, in_channels=3, num_classes=num_classes, depth=3, base_channels=4)
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, num_classes, *size)


def layer_types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


def test_presets_are_built_from_the_layers_their_names_promise():
    paper = layer_types(build_model("unet", 3, 1, depth=2, base_channels=4))
    assert nn.MaxPool2d in paper and nn.ConvTranspose2d in paper and nn.Upsample not in paper
    upsample = build_model("unet_upsample", 3, 1, depth=2, base_channels=4)
    assert nn.MaxPool2d in layer_types(upsample) and nn.ConvTranspose2d not in layer_types(upsample)
    assert {m.mode for m in upsample.modules() if isinstance(m, nn.Upsample)} == {"nearest"}
    convpool = build_model("unet_convpool", 3, 1, depth=2, base_channels=4)
    assert nn.MaxPool2d not in layer_types(convpool) and nn.ConvTranspose2d in layer_types(convpool)
    strided = [m for m in convpool.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 2


def test_every_parameter_receives_a_gradient():
    model = build_model("unet", 3, 2, depth=2, base_channels=4, dropout=0.1)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(ConfigurationError, match="unet_convpool"):
        build_model("segformer-xxl", 3, 1)
    assert {"unet", "unet_upsample", "unet_convpool"} <= set(MODELS)
