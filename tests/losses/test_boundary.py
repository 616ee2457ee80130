"""The U-Net boundary weight map (computed by the data) and the boundary-weighted BCE / CE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from lightning_seg.data.weight_maps import check_weight_map_spec, unet_weight_map
from lightning_seg.errors import ConfigurationError
from lightning_seg.losses import build_loss


def two_squares(gap: int) -> np.ndarray:
    mask = np.zeros((40, 40), np.int64)
    mask[10:20, 5:15] = 1
    mask[10:20, 15 + gap : 25 + gap] = 1
    return mask


@pytest.mark.parametrize(("gap", "d1", "d2"), [(1, 1, 1), (2, 1, 2)])
def test_weight_map_peaks_in_the_gap_between_two_squares(gap, d1, d2):
    weight = unet_weight_map(two_squares(gap), w0=10.0, sigma=5.0)
    row, col = np.unravel_index(weight.argmax(), weight.shape)
    assert 10 <= row < 20
    assert 15 <= col < 15 + gap
    w_background = 1600 / (2 * (1600 - 200))  # n_valid / (n_classes * n_background)
    expected = w_background + 10.0 * math.exp(-((d1 + d2) ** 2) / (2 * 5.0**2))
    assert weight[15, 15] == pytest.approx(expected, rel=1e-5)
    assert weight[15, 7] == pytest.approx(1600 / (2 * 200))  # inside a square: w_c only


def test_one_object_has_no_border_term_and_class_weights_average_to_one():
    mask = np.zeros((30, 30), np.int64)
    mask[5:15, 5:15] = 1
    mask[20:, 20:] = 255
    weight = unet_weight_map(mask, ignore_index=255)
    n_valid = 900 - 100
    assert weight[mask == 255].max() == 0.0
    assert np.allclose(weight[mask == 1], n_valid / (2 * 100))
    assert np.allclose(weight[mask == 0], n_valid / (2 * (n_valid - 100)))
    assert weight[mask != 255].mean() == pytest.approx(1.0)


def test_objects_are_four_connected():
    mask = np.zeros((20, 20), np.int64)
    mask[2:8, 2:8] = 1
    mask[8:14, 8:14] = 2  # touches the first square at one corner only
    weight = unet_weight_map(mask)
    background = mask == 0
    assert weight[background].max() > weight[background].min() + 1  # a border term exists
    assert weight[7, 8] == weight.max()  # next to both corners


def brute_force_weight_map(mask: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """Full-image distance transforms of every object: the slow reference."""
    labels, n = ndimage.label(mask != 0)
    dists = np.sort(
        np.stack([ndimage.distance_transform_edt(labels != k) for k in range(1, n + 1)]), 0
    )
    classes, counts = np.unique(mask, return_counts=True)
    weight = np.zeros(mask.shape)
    for c, count in zip(classes, counts, strict=True):
        weight[mask == c] = mask.size / (len(classes) * count)
    border = w0 * np.exp(-((dists[0] + dists[1]) ** 2) / (2 * sigma**2))
    return weight + np.where(mask == 0, border, 0.0)


def test_cropped_distances_match_the_full_computation_within_tolerance():
    rng = np.random.default_rng(0)
    mask = np.zeros((120, 120), np.int64)
    for _ in range(25):
        r, c = rng.integers(0, 112, 2)
        h, w = rng.integers(2, 8, 2)
        mask[r : r + h, c : c + w] = rng.integers(1, 3)
    fast = unet_weight_map(mask, w0=10.0, sigma=5.0)
    slow = brute_force_weight_map(mask, 10.0, 5.0)
    assert np.abs(fast - slow).max() <= 1e-3
    assert fast.dtype == np.float32


def test_boundary_losses_need_the_weight_map():
    loss = build_loss("boundary_bce", "binary")
    assert loss.needs_weight_map and build_loss("boundary_ce", "multiclass").needs_weight_map
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ConfigurationError, match=r"needs the U-Net weight map.*data.init_args"):
        loss(logits, target)


@pytest.mark.parametrize("spec", [{"w0": 1, "radius": 3}, "10", {"sigma": 0}, {"w0": -1}])
def test_a_bad_weight_map_option_is_one_line(spec):
    with pytest.raises(ConfigurationError, match=r"data\.weight_map"):
        check_weight_map_spec(spec)
    assert check_weight_map_spec({"w0": 5}) == {"w0": 5.0, "sigma": 5.0}


def test_boundary_bce_and_ce_by_hand():
    logits = torch.tensor([2.0, -1.0, 0.0, 3.0]).reshape(1, 1, 2, 2)
    target = torch.tensor([1, 0, 1, 255]).reshape(1, 2, 2)
    weight = torch.tensor([1.0, 2.0, 4.0, 0.0]).reshape(1, 2, 2)
    terms = [
        1.0 * -math.log(1 / (1 + math.exp(-2.0))),
        2.0 * -math.log(1 - 1 / (1 + math.exp(1.0))),
        4.0 * -math.log(0.5),
    ]
    loss = build_loss("boundary_bce", "binary", ignore_index=255)
    assert loss(logits, target, weight).item() == pytest.approx(sum(terms) / 3, rel=1e-5)

    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]]).reshape(1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])  # p = (1/4, 3/4) at pixel 0, (1/2, 1/2) at pixel 1
    weight = torch.tensor([[[3.0, 0.5]]])
    expected = (3.0 * -math.log(3 / 4) + 0.5 * -math.log(1 / 2)) / 2
    loss = build_loss("boundary_ce", "multiclass")
    assert loss(logits, target, weight).item() == pytest.approx(expected, rel=1e-5)
