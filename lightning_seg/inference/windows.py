"""Sliding-window arithmetic as small pure functions: tile positions and the blending window."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home

import torch
from torch import Tensor

# Without knowing how training prepared images, an image more than this many times the training
# size in either side is predicted with a sliding window rather than shrunk.
RESIZE_LIMIT = 2.0
# Smallest weight of the blending window (relative to its peak 1), so that pixels near an image
# border, covered only by the edge of one tile, still get a well-defined value.
WINDOW_FLOOR = 0.01


def blending_window(height: int, width: int, floor: float = WINDOW_FLOOR) -> Tensor:
    """A 2-D Hann window (``sin^2``, sampled at pixel centres so no weight is zero) that is 1 at
    the centre and ``floor`` at the least at the edges, as a 1 x H x W tensor.

    Tiles overlap, so each pixel's probability is the weighted mean of the tiles that cover it:
    the weights fall smoothly towards the tile borders, where the network saw the least context,
    which removes the seams that averaging with flat weights (or cutting tiles apart) leaves.
    """

    def hann(n: int) -> Tensor:
        return torch.sin(torch.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2

    window = hann(height)[:, None] * hann(width)[None, :]
    return (floor + (1.0 - floor) * window).float()[None]


def tile_starts(length: int, tile: int, step: int) -> list[int]:
    """Starts of tiles of ``tile`` pixels every ``step`` pixels that cover ``length`` pixels once
    padded to ``(count - 1) * step + tile``."""
    count = 1 if length <= tile else -(-(length - tile) // step) + 1
    return [i * step for i in range(count)]
