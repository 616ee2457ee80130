"""Tversky and Lovasz (from SMP): hand-computed values, perfect predictions, empty masks."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_seg.errors import ConfigurationError
from lightning_seg.losses import build_loss


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_binary_tversky_by_hand():
    z = [2.0, -1.0, 0.5, -3.0]
    t = [1, 0, 1, 0]
    logits = torch.tensor(z).reshape(1, 1, 2, 2)
    target = torch.tensor(t).reshape(1, 2, 2)
    p = [sigmoid(v) for v in z]
    tp = p[0] + p[2]
    fp = p[1] + p[3]
    fn = (1 - p[0]) + (1 - p[2])
    alpha, beta, smooth = 0.3, 0.7, 1.0
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    spec = [{"name": "tversky", "alpha": alpha, "beta": beta, "smooth": smooth}]
    assert build_loss(spec, "binary")(logits, target).item() == pytest.approx(1 - index, rel=1e-5)
    focal = [{"name": "tversky", "alpha": alpha, "beta": beta, "gamma": 0.75}]
    expected = (1 - index) ** 0.75
    assert build_loss(focal, "binary")(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_tversky_with_equal_weights_is_dice():
    logits = torch.randn(2, 3, 6, 6)
    target = torch.randint(0, 3, (2, 6, 6))
    tversky = build_loss([{"name": "tversky", "alpha": 0.5, "beta": 0.5}], "multiclass")
    dice = build_loss("dice", "multiclass")
    assert torch.allclose(tversky(logits, target), dice(logits, target), atol=1e-6)


def test_binary_lovasz_hinge_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0]).reshape(1, 1, 2, 2)
    target = torch.tensor([1, 0, 1, 0]).reshape(1, 2, 2)
    # errors 1 - z * sign = [-1, 0, 0.5, -2]; sorted descending: 0.5 (fg), 0 (bg), -1 (fg), -2 (bg)
    # Jaccard after k pixels, 1 - (2 - fg_k) / (2 + bg_k): 1/2, 2/3, 1, 1 -> steps 1/2, 1/6, 1/3, 0
    expected = 0.5 * 0.5 + 0.0 * (1 / 6)  # relu(errors) . steps
    assert build_loss("lovasz", "binary")(logits, target).item() == pytest.approx(expected)


def test_multiclass_lovasz_softmax_by_hand():
    # pixel A: p = (1/2, 1/2), class 0; pixel B: p = (1/4, 3/4), class 1
    logits = torch.tensor([[0.0, 0.0], [0.0, math.log(3)]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    # class 0: errors |fg - p0| = (1/2 fg, 1/4 bg); Jaccard steps (1, 0) -> 1/2
    # class 1: errors (1/2 bg, 1/4 fg); Jaccard after k: 1 - 1/2, 1 -> steps (1/2, 1/2) -> 3/8
    expected = (0.5 + 0.375) / 2
    loss = build_loss("lovasz", "multiclass")(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["dice", "tversky", "lovasz"])
@pytest.mark.parametrize("mode", ["binary", "multiclass"])
def test_a_perfect_prediction_costs_nearly_nothing(name, mode):
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 1
    if mode == "binary":
        logits = (target.float() * 2 - 1)[:, None] * 50
    else:
        target[:, 6:, :] = 2
        logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert build_loss(name, mode)(logits, target) < 1e-3


@pytest.mark.parametrize("mode", ["binary", "multiclass"])
def test_lovasz_per_image_skips_fully_ignored_images(mode):
    channels = 1 if mode == "binary" else 3
    logits = torch.randn(2, channels, 5, 5, requires_grad=True)
    target = torch.randint(0, 2, (2, 5, 5))
    target[1] = 255
    loss = build_loss([{"name": "lovasz", "per_image": True}], mode, ignore_index=255)
    value = loss(logits, target)
    alone = build_loss("lovasz", mode, ignore_index=255)(logits[:1], target[:1])
    assert torch.allclose(value, alone)
    value.backward()
    assert torch.isfinite(logits.grad).all()
    assert loss(logits, torch.full_like(target, 255)).item() == 0.0


def test_bad_tversky_gamma():
    with pytest.raises(ConfigurationError, match="gamma must be > 0"):
        build_loss([{"name": "tversky", "gamma": 0}], "binary")
