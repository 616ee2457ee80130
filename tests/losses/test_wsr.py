"""WSR loss: lam = 0 is the supervised loss; sparsity and contiguity on hand-made maps."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_seg.errors import ConfigurationError
from lightning_seg.losses import build_loss
from lightning_seg.losses.pixelwise import BCELoss, CrossEntropyLoss
from lightning_seg.losses.wsr import contiguity, foreground_probability, sparsity

PROB = [[0.2, 0.8], [0.5, 0.1]]


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_sparsity_and_contiguity_of_a_hand_made_map():
    prob = torch.tensor(PROB)[None]
    valid = torch.ones_like(prob)
    assert sparsity(prob, valid).item() == pytest.approx((0.2 + 0.8 + 0.5 + 0.1) / 4)
    vertical = (abs(0.5 - 0.2) + abs(0.1 - 0.8)) / 2
    horizontal = (abs(0.8 - 0.2) + abs(0.1 - 0.5)) / 2
    assert contiguity(prob, valid).item() == pytest.approx(vertical + horizontal)
    # the bottom-right pixel ignored: it leaves the mean and both of its pairs
    valid[0, 1, 1] = 0
    assert sparsity(prob, valid).item() == pytest.approx((0.2 + 0.8 + 0.5) / 3)
    assert contiguity(prob, valid).item() == pytest.approx(abs(0.5 - 0.2) + abs(0.8 - 0.2))
    # nothing valid: both zero
    assert sparsity(prob, valid * 0).item() == 0.0
    assert contiguity(prob, valid * 0).item() == 0.0


def test_wsr_total_by_hand():
    logits = torch.tensor([[logit(p) for p in row] for row in PROB])[None, None]
    target = torch.tensor([[[0, 1], [1, 0]]])
    lam, gamma = 0.5, 2.0
    supervised = -(math.log(0.8) + math.log(0.8) + math.log(0.5) + math.log(0.9)) / 4
    sparse = (0.2 + 0.8 + 0.5 + 0.1) / 4
    contiguous = (0.3 + 0.7) / 2 + (0.6 + 0.4) / 2
    expected = supervised + lam * (sparse + gamma * contiguous)
    loss = build_loss([{"name": "wsr", "lam": lam, "gamma": gamma}], "binary")
    assert loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_multiclass_foreground_is_everything_but_background():
    logits = torch.tensor([0.0, math.log(2), math.log(5)]).reshape(1, 3, 1, 1)
    # softmax = (1, 2, 5) / 8: the foreground probability is 7 / 8
    prob = foreground_probability(logits, "multiclass")
    assert prob.item() == pytest.approx(7 / 8)


@pytest.mark.parametrize(
    ("mode", "spec", "channels"),
    [
        ("binary", "bce", 1),
        ("binary", "bce+dice", 1),
        ("multiclass", "ce", 4),
        ("multiclass", [{"name": "focal", "gamma": 1.0}], 4),
    ],
)
def test_wsr_with_lam_zero_is_its_supervised_loss(mode, spec, channels):
    logits = torch.randn(2, channels, 6, 6)
    target = torch.randint(0, channels if channels > 1 else 2, (2, 6, 6))
    target[0, 0] = 255
    weight = torch.rand(2, 6, 6)
    wsr = build_loss([{"name": "wsr", "supervised": spec, "lam": 0.0}], mode, ignore_index=255)
    supervised = build_loss(spec, mode, ignore_index=255)
    assert torch.equal(wsr(logits, target, weight), supervised(logits, target, weight))
    regularised = build_loss([{"name": "wsr", "supervised": spec}], mode, ignore_index=255)
    assert regularised(logits, target) > supervised(logits, target)


def test_default_supervised_loss_follows_the_mode():
    assert isinstance(build_loss("wsr", "binary").supervised, BCELoss)
    assert isinstance(build_loss("wsr", "multiclass").supervised, CrossEntropyLoss)
    spec = [{"name": "wsr", "supervised": [{"name": "bce", "pos_weight": 3.0}]}]
    assert build_loss(spec, "binary").supervised.pos_weight.item() == 3.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"supervised": "bce+wsr"}, "cannot itself be 'wsr'"),
        ({"lam": -1.0}, "must be >= 0"),
        ({"supervised": "ce"}, "does not support binary"),
    ],
)
def test_bad_wsr_arguments(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        build_loss([{"name": "wsr", **kwargs}], "binary")
