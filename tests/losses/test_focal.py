"""Focal loss: hand-computed values, ignore_index, weight map, and gamma = 0 is BCE / CE."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from lightning_seg.errors import ConfigurationError
from lightning_seg.losses import build_loss


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def test_binary_focal_by_hand():
    z = [2.0, -1.0, 0.0, 3.0]
    t = [1, 0, 1, 0]
    logits = torch.tensor(z).reshape(1, 1, 2, 2)
    target = torch.tensor(t).reshape(1, 2, 2)
    # p_t = p for a positive, 1 - p for a negative; FL = -alpha_t (1 - p_t)^gamma log p_t
    p_t = [sigmoid(zi) if ti else 1 - sigmoid(zi) for zi, ti in zip(z, t, strict=True)]
    plain = sum(-((1 - p) ** 2) * math.log(p) for p in p_t) / 4
    alpha_t = [0.25 if ti else 0.75 for ti in t]
    balanced = sum(-a * (1 - p) ** 2 * math.log(p) for a, p in zip(alpha_t, p_t, strict=True)) / 4
    assert build_loss("focal", "binary")(logits, target).item() == pytest.approx(plain, rel=1e-5)
    spec = [{"name": "focal", "alpha": 0.25, "gamma": 2.0}]
    assert build_loss(spec, "binary")(logits, target).item() == pytest.approx(balanced, rel=1e-5)


def test_multiclass_focal_is_the_softmax_focal_loss_by_hand():
    # two pixels, three classes: pixel 0 of class 0, pixel 1 of class 2
    z = [[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]]
    logits = torch.tensor(z).T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[0, 2]]])

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    p_t = [softmax(z[0])[0], softmax(z[1])[2]]
    gamma = 1.5
    expected = sum(-((1 - p) ** gamma) * math.log(p) for p in p_t) / 2
    loss = build_loss([{"name": "focal", "gamma": gamma}], "multiclass")
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    # alpha: background weighs 1 - alpha, any other class alpha
    alpha_t = [0.75, 0.25]
    expected = sum(-a * (1 - p) ** gamma * math.log(p) for a, p in zip(alpha_t, p_t, strict=True))
    loss = build_loss([{"name": "focal", "gamma": gamma, "alpha": 0.25}], "multiclass")
    assert loss(logits, target).item() == pytest.approx(expected / 2, rel=1e-5)
    # a list gives one alpha per class
    loss = build_loss([{"name": "focal", "gamma": gamma, "alpha": [0.1, 0.2, 0.7]}], "multiclass")
    expected = (-0.1 * (1 - p_t[0]) ** gamma * math.log(p_t[0])) + (
        -0.7 * (1 - p_t[1]) ** gamma * math.log(p_t[1])
    )
    assert loss(logits, target).item() == pytest.approx(expected / 2, rel=1e-5)


@pytest.mark.parametrize(("alpha", "gamma"), [(None, 2.0), (0.25, 2.0), (0.6, 1.5), (None, 0.0)])
def test_binary_focal_matches_torchvision(alpha, gamma):
    logits = 3 * torch.randn(2, 1, 6, 6)
    target = torch.randint(0, 2, (2, 6, 6))
    expected = sigmoid_focal_loss(
        logits[:, 0], target.float(), alpha=-1 if alpha is None else alpha, gamma=gamma
    ).mean()
    loss = build_loss([{"name": "focal", "alpha": alpha, "gamma": gamma}], "binary")
    assert torch.allclose(loss(logits, target), expected, atol=1e-6)


def test_binary_focal_is_two_class_softmax_focal():
    logits = torch.randn(2, 1, 5, 5)
    target = torch.randint(0, 2, (2, 5, 5))
    two_class = torch.cat([torch.zeros_like(logits), logits], dim=1)
    for alpha in (None, 0.3):
        spec = [{"name": "focal", "alpha": alpha, "gamma": 2.5}]
        binary = build_loss(spec, "binary")(logits, target)
        assert torch.allclose(binary, build_loss(spec, "multiclass")(two_class, target), atol=1e-6)


def test_focal_with_gamma_zero_is_bce_and_ce():
    logits = torch.randn(2, 1, 6, 7)
    target = torch.randint(0, 2, (2, 6, 7))
    target[0, :2] = 255
    focal = build_loss([{"name": "focal", "gamma": 0.0}], "binary", ignore_index=255)
    bce = build_loss("bce", "binary", ignore_index=255)
    assert torch.equal(focal(logits, target), bce(logits, target))

    logits = torch.randn(2, 4, 6, 7)
    target = torch.randint(0, 4, (2, 6, 7))
    target[1, 3:] = 255
    focal = build_loss([{"name": "focal", "gamma": 0.0}], "multiclass", ignore_index=255)
    ce = build_loss("ce", "multiclass", ignore_index=255)
    assert torch.equal(focal(logits, target), ce(logits, target))
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(focal(logits, target), expected, atol=1e-6)


def test_focal_ignores_pixels_and_applies_the_weight_map():
    logits = torch.tensor([2.0, -1.0, 0.0, 3.0]).reshape(1, 1, 2, 2)
    target = torch.tensor([1, 0, 255, 0]).reshape(1, 2, 2)
    weight = torch.tensor([1.0, 2.0, 5.0, 0.5]).reshape(1, 2, 2)
    terms = [
        -((1 - sigmoid(2.0)) ** 2) * math.log(sigmoid(2.0)),
        -(sigmoid(-1.0) ** 2) * math.log(1 - sigmoid(-1.0)),
        -(sigmoid(3.0) ** 2) * math.log(1 - sigmoid(3.0)),
    ]
    loss = build_loss("focal", "binary", ignore_index=255)
    assert loss(logits, target).item() == pytest.approx(sum(terms) / 3, rel=1e-5)
    weighted = (1.0 * terms[0] + 2.0 * terms[1] + 0.5 * terms[2]) / 3
    assert loss(logits, target, weight).item() == pytest.approx(weighted, rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradients_stay_finite_for_saturated_logits_and_small_gamma(gamma):
    # torchvision's sigmoid_focal_loss gives NaN gradients here for 0 < gamma < 1
    logits = torch.tensor([40.0, -40.0, 200.0, 0.3]).reshape(1, 1, 2, 2).requires_grad_(True)
    target = torch.tensor([1, 0, 1, 0]).reshape(1, 2, 2)
    build_loss([{"name": "focal", "gamma": gamma}], "binary")(logits, target).backward()
    assert torch.isfinite(logits.grad).all()
    logits = torch.tensor([40.0, -40.0, 3.0]).reshape(1, 3, 1, 1).repeat(1, 1, 2, 2)
    logits.requires_grad_(True)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    build_loss([{"name": "focal", "gamma": gamma}], "multiclass")(logits, target).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    ("kwargs", "mode", "message"),
    [
        ({"alpha": [0.5, 0.5]}, "binary", "needs multiclass"),
        ({"alpha": 1.5}, "binary", r"alpha must be in \[0, 1\]"),
        ({"gamma": -1.0}, "multiclass", "gamma must be >= 0"),
    ],
)
def test_bad_focal_arguments(kwargs, mode, message):
    with pytest.raises(ConfigurationError, match=message):
        build_loss([{"name": "focal", **kwargs}], mode)


def test_per_class_alpha_must_match_the_classes():
    loss = build_loss([{"name": "focal", "alpha": [0.5, 0.5]}], "multiclass")
    with pytest.raises(ConfigurationError, match="2 entries for 3 classes"):
        loss(torch.randn(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
