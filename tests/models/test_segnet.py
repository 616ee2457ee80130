"""The hand-written SegNet and its upsampling preset."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_seg.models import MODELS, build_model


@pytest.mark.parametrize("name", ["segnet", "segnet_upsample"])
@pytest.mark.parametrize("num_classes", [1, 5])
@pytest.mark.parametrize("size", [(64, 64), (75, 111)])
def test_output_shape_matches_input_at_any_size(name, num_classes, size):
    model = build_model(name, in_channels=3, num_classes=num_classes, base_channels=4).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, num_classes, *size)


def test_bilinear_variant_and_other_input_channels():
    model = build_model("segnet", 1, 3, base_channels=4, upsampling="bilinear").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 33, 47)).shape == (1, 3, 33, 47)


@pytest.mark.parametrize("name", ["segnet", "segnet_upsample"])
def test_every_parameter_receives_a_gradient(name):
    torch.manual_seed(0)
    model = build_model(name, 3, 3, base_channels=4)
    logits = model(torch.randn(2, 3, 64, 64))
    F.cross_entropy(logits, torch.randint(0, 3, (2, 64, 64))).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def encoder_convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]


def test_encoder_is_vgg16_and_only_the_paper_preset_unpools():
    paper = build_model("segnet", 3, 1, base_channels=4)
    assert len(encoder_convs(paper)) == 13
    widths = [4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32]
    assert [c.out_channels for c in encoder_convs(paper)] == widths
    pools = [m for m in paper.encoder.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5
    assert all(p.kernel_size == 2 and p.stride == 2 and p.return_indices for p in pools)
    assert sum(isinstance(m, nn.MaxUnpool2d) for m in paper.decoder.modules()) == 5
    for upsampling in ("nearest", "bilinear"):
        model = build_model("segnet", 3, 1, base_channels=4, upsampling=upsampling)
        assert len(encoder_convs(model)) == 13
        assert not any(isinstance(m, nn.MaxUnpool2d) for m in model.modules())
    preset = build_model("segnet_upsample", 3, 1, base_channels=4)
    assert not any(isinstance(m, nn.MaxUnpool2d) for m in preset.modules())
    assert MODELS["segnet_upsample"].keywords == {"upsampling": "nearest"}


def test_unpooling_puts_the_pooled_values_back_at_the_argmax_positions():
    model = build_model("segnet", 3, 1, base_channels=4)
    pool, unpool = model.encoder[0].pool, model.decoder[-1].unpool
    # Distinct positive values so every 2x2 window has one argmax and zeros mean "not there".
    x = (torch.randperm(2 * 4 * 6 * 10).float() + 1).reshape(2, 4, 6, 10)
    pooled, indices = pool(x)
    out = unpool(pooled, indices, output_size=x.shape[-2:])

    windows = x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 4, 3, 5, 4)  # N C H/2 W/2 (2x2)
    argmax = F.one_hot(windows.argmax(-1), 4).reshape(2, 4, 3, 5, 2, 2)
    expected = argmax.permute(0, 1, 2, 4, 3, 5).reshape(x.shape).bool()
    assert torch.equal(out != 0, expected)
    assert torch.equal(out[expected], x[expected])
    assert torch.equal(out.unfold(2, 2, 2).unfold(3, 2, 2).sum((-2, -1)), pooled)


def test_the_decoder_unpools_with_the_indices_of_the_matching_encoder_stage():
    model = build_model("segnet", 3, 1, base_channels=4).eval()
    pooled: dict[int, torch.Tensor] = {}
    unpooled: dict[int, torch.Tensor] = {}
    for i, stage in enumerate(model.encoder):
        stage.pool.register_forward_hook(lambda m, args, out, i=i: pooled.__setitem__(i, out[1]))
    for i, stage in enumerate(reversed(model.decoder)):
        stage.unpool.register_forward_pre_hook(
            lambda m, args, kwargs, i=i: unpooled.__setitem__(i, args[1]), with_kwargs=True
        )
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    assert sorted(pooled) == sorted(unpooled) == [0, 1, 2, 3, 4]
    for i in pooled:
        assert unpooled[i] is pooled[i]
