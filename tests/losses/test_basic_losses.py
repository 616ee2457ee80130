"""Loss registry, composition and the basic losses against PyTorch's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_seg.data.weight_maps import unet_weight_map
from lightning_seg.errors import ConfigurationError
from lightning_seg.losses import LOSSES, WeightedSum, build_loss


def test_bce_matches_pytorch_and_respects_ignore_index():
    logits = torch.randn(2, 1, 5, 6)
    target = torch.randint(0, 2, (2, 5, 6))
    expected = F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
    assert torch.allclose(build_loss("bce", "binary")(logits, target), expected)
    ignored = target.clone()
    ignored[:, :2] = 255
    keep = ignored != 255
    expected = F.binary_cross_entropy_with_logits(logits[:, 0][keep], target[keep].float())
    assert torch.allclose(build_loss("bce", "binary", ignore_index=255)(logits, ignored), expected)


def test_ce_matches_pytorch_with_class_weights_and_ignore_index():
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, 0] = 11
    weights = [1.0, 2.0, 0.5]
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weights), ignore_index=11)
    loss = build_loss([{"name": "ce", "class_weights": weights}], "multiclass", ignore_index=11)
    assert torch.allclose(loss(logits, target), expected, atol=1e-6)


def test_weight_map_scales_pixel_losses():
    logits = torch.randn(1, 1, 4, 4)
    target = torch.randint(0, 2, (1, 4, 4))
    bce = build_loss("bce", "binary")
    assert torch.allclose(bce(logits, target, torch.full((1, 4, 4), 2.0)), 2 * bce(logits, target))


def test_dice_of_a_perfect_prediction_is_near_zero():
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 1
    logits = (target.float() * 2 - 1)[:, None] * 50
    assert build_loss("dice", "binary")(logits, target) < 1e-3


def test_composite_spec_sums_weighted_terms():
    logits = torch.randn(2, 1, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    bce, dice = build_loss("bce", "binary"), build_loss("dice", "binary")
    combined = build_loss("bce+dice", "binary")
    assert isinstance(combined, WeightedSum)
    assert torch.allclose(combined(logits, target), bce(logits, target) + dice(logits, target))
    weighted = build_loss(
        [{"name": "bce", "weight": 0.25}, {"name": "dice", "weight": 2}], "binary"
    )
    expected = 0.25 * bce(logits, target) + 2 * dice(logits, target)
    assert torch.allclose(weighted(logits, target), expected)


@pytest.mark.parametrize(
    ("spec", "mode", "message"),
    [
        (
            "hinge",
            "binary",
            "unknown loss 'hinge'; valid choices for loss: " + ", ".join(sorted(LOSSES)),
        ),
        ("boundary_bce", "multiclass", "use 'boundary_ce' for multiclass"),
        ("bce", "multiclass", "use 'ce' for multiclass"),
        ([{"name": "bce", "gamma": 2}], "binary", "unknown arguments ['gamma']"),
        ([{"weight": 1}], "binary", "needs a 'name'"),
    ],
)
def test_bad_specs_explain_themselves(spec, mode, message):
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_loss(spec, mode)


def test_the_registry_holds_every_documented_loss():
    expected = {"bce", "ce", "dice", "focal", "tversky", "lovasz", "wsr"}
    assert expected | {"boundary_bce", "boundary_ce"} <= set(LOSSES)


def test_bce_plus_focal_composes():
    logits = torch.randn(2, 1, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    combined = build_loss("bce+focal", "binary")
    assert isinstance(combined, WeightedSum)
    focal = build_loss("focal", "binary")
    expected = build_loss("bce", "binary")(logits, target) + focal(logits, target)
    assert torch.allclose(combined(logits, target), expected)


REGISTERED = [
    (name, mode)
    for name, factory in sorted(LOSSES.items())
    for mode in getattr(factory, "modes", ("binary", "multiclass"))
]


def masks(kind: str) -> torch.Tensor:
    target = torch.zeros(2, 12, 12, dtype=torch.long)
    if kind == "foreground":
        target[:] = 1
    elif kind == "empty":
        target[:] = 255
    elif kind == "mixed":
        target[:, 2:5, 2:5] = 1
        target[:, 7:10, 6:11] = 2
        target[1, :, :3] = 255
    return target


@pytest.mark.parametrize("kind", ["background", "foreground", "empty", "mixed"])
@pytest.mark.parametrize(("name", "mode"), REGISTERED)
def test_every_loss_has_finite_gradients(name, mode, kind):
    torch.manual_seed(0)
    target = masks(kind)
    if mode == "binary":
        target = torch.where(target == 255, target, target.clamp_max(1))
    channels = 1 if mode == "binary" else 3
    logits = (3 * torch.randn(2, channels, 12, 12)).requires_grad_(True)
    loss = build_loss(name, mode, ignore_index=255)
    weight = None
    if getattr(loss, "needs_weight_map", False):  # the map the data pipeline would give
        maps = [unet_weight_map(m.numpy(), ignore_index=255) for m in target]
        weight = torch.from_numpy(np.stack(maps))
    value = loss(logits, target, weight)
    assert value.dim() == 0
    assert torch.isfinite(value)
    value.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
