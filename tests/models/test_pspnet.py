"""The hand-written PSPNet: dilated backbone, pyramid pooling, auxiliary head, SMP encoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_seg.models import AuxiliaryOutput, build_model

TINY = {"base_channels": 8, "layers": (1, 1, 1, 1)}


@pytest.mark.parametrize("num_classes", [1, 5])
@pytest.mark.parametrize("size", [(64, 64), (75, 111)])
def test_output_shape_matches_input_at_any_size(num_classes, size):
    model = build_model("pspnet", in_channels=3, num_classes=num_classes, **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert isinstance(out, Tensor)
    assert out.shape == (2, num_classes, *size)


def test_auxiliary_output_in_training_mode_only():
    model = build_model("pspnet", 3, 5, **TINY).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, AuxiliaryOutput)
    assert out.logits.shape == (2, 5, 64, 64)
    ((aux_logits, weight),) = out.auxiliary
    assert weight == pytest.approx(0.4)
    assert aux_logits.shape == (2, 5, 8, 8)
    with torch.no_grad():
        assert isinstance(model.eval()(torch.randn(2, 3, 64, 64)), Tensor)


def test_no_auxiliary_head_without_weight():
    model = build_model("pspnet", 3, 2, aux_weight=0.0, **TINY)
    assert model.aux_head is None
    assert isinstance(model.train()(torch.randn(2, 3, 32, 32)), Tensor)


def test_every_parameter_receives_a_gradient_from_main_and_auxiliary_loss():
    torch.manual_seed(0)
    model = build_model("pspnet", 3, 3, base_channels=8).train()
    mask = torch.randint(0, 3, (4, 64, 64))
    out = model(torch.randn(4, 3, 64, 64))
    loss = F.cross_entropy(out.logits, mask)
    for aux_logits, weight in out.auxiliary:
        aux_logits = F.interpolate(aux_logits, size=(64, 64), mode="bilinear")
        loss = loss + weight * F.cross_entropy(aux_logits, mask)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_backbone_is_dilated_to_output_stride_8():
    model = build_model("pspnet", 3, 1, base_channels=8).eval()
    with torch.no_grad():
        aux_features, features = model.backbone(torch.randn(1, 3, 64, 64))
    assert aux_features.shape == (1, 32, 8, 8)
    assert features.shape == (1, 64, 8, 8)
    stem_convs = [m for m in model.backbone.stem.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in stem_convs] == [(3, 3)] * 3
    assert [c.stride for c in stem_convs] == [(2, 2), (1, 1), (1, 1)]
    convs3x3 = [
        [m for m in stage.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        for stage in model.backbone.stages
    ]
    dilations = [{conv.dilation for conv in convs} for convs in convs3x3]
    assert dilations == [{(1, 1)}, {(1, 1)}, {(2, 2)}, {(4, 4)}]


def test_pyramid_has_one_branch_per_bin_with_the_pooled_sizes():
    model = build_model("pspnet", 3, 1, base_channels=8).eval()
    pools = [m for m in model.pyramid_pooling.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    assert len(model.pyramid_pooling.branches) == 4
    pooled_sizes = []
    for pool in pools:
        pool.register_forward_hook(lambda m, args, out: pooled_sizes.append(out.shape[-2:]))
    captured: list[Tensor] = []
    model.pyramid_pooling.register_forward_hook(lambda m, args, out: captured.append(out))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert [tuple(s) for s in pooled_sizes] == [(1, 1), (2, 2), (3, 3), (6, 6)]
    # Features (64 channels) + 4 branches reduced to 64 // 4 channels each, at 1/8.
    assert captured[0].shape == (1, 64 + 4 * 16, 8, 8)


@pytest.mark.parametrize("encoder", ["resnet18", "tu-resnet18"])
def test_smp_encoder_backbone(encoder):
    model = build_model("pspnet", 3, 4, encoder=encoder, encoder_weights=None).train()
    assert model.backbone.out_channels == (256, 512)
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, AuxiliaryOutput)
    assert out.logits.shape == (2, 4, 64, 64)
    ((aux_logits, weight),) = out.auxiliary
    assert aux_logits.shape == (2, 4, 8, 8) and weight == pytest.approx(0.4)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 75, 111)).shape == (1, 4, 75, 111)


def test_smp_encoder_backbone_loads_a_local_weights_file(tmp_path):
    import segmentation_models_pytorch as smp

    source = smp.encoders.get_encoder("resnet18", weights=None)
    for param in source.parameters():
        torch.nn.init.normal_(param)
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    model = build_model("pspnet", 3, 2, encoder="resnet18",
                        encoder_weights=str(tmp_path / "resnet18.pth"))  # fmt: skip
    loaded = model.backbone.encoder.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key
