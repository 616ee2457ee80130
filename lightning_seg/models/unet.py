"""U-Net (Ronneberger et al., 2015) and the variants named by what they change.

The contracting path halves the resolution ``depth`` times (by max-pooling, as in the paper, or by
a strided convolution) while doubling the channels; the expansive path doubles the resolution
(by a transposed convolution, as in the paper, or by nearest / bilinear interpolation followed by
a 1x1 convolution), concatenates the skip connection of the same level and applies two 3x3
convolutions. Unlike the paper, convolutions are padded so the output has the input's size; inputs
whose sides are not multiples of ``2**depth`` are padded and the output is cropped back.
"""

from typing import Literal

import torch
from torch import Tensor, nn

from lightning_seg.models.base import crop_to, pad_to_multiple
from lightning_seg.models.blocks import DoubleConv

Downsampling = Literal["maxpool", "conv"]
Upsampling = Literal["transpose", "nearest", "bilinear"]


def make_downsample(kind: Downsampling, channels: int) -> nn.Module:
    """Halve the resolution: 2x2 max-pooling, or a learnt 2x2 convolution with stride 2."""
    if kind == "maxpool":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if kind == "conv":
        return nn.Conv2d(channels, channels, kernel_size=2, stride=2)
    raise ValueError(f"unknown downsampling {kind!r}; choose 'maxpool' or 'conv'")


def make_upsample(kind: Upsampling, in_channels: int, out_channels: int) -> nn.Module:
    """Double the resolution and map ``in_channels`` to ``out_channels``."""
    if kind == "transpose":
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
    if kind in ("nearest", "bilinear"):
        align = False if kind == "bilinear" else None
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode=kind, align_corners=align),
            nn.Conv2d(in_channels, out_channels, kernel_size=1),
        )
    raise ValueError(f"unknown upsampling {kind!r}; choose 'transpose', 'nearest' or 'bilinear'")


class Down(nn.Module):
    """One contracting step: downsample, then two convolutions."""

    def __init__(self, in_ch: int, out_ch: int, down: Downsampling, batch_norm: bool) -> None:
        super().__init__()
        self.pool = make_downsample(down, in_ch)
        self.conv = DoubleConv(in_ch, out_ch, batch_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pool(x))


class Up(nn.Module):
    """One expansive step: upsample, concatenate the skip connection, two convolutions."""

    def __init__(self, in_ch: int, out_ch: int, up: Upsampling, batch_norm: bool) -> None:
        super().__init__()
        self.up = make_upsample(up, in_ch, out_ch)
        self.conv = DoubleConv(2 * out_ch, out_ch, batch_norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """U-Net with configurable depth, width, downsampling and upsampling."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        depth: int = 4,
        base_channels: int = 64,
        down: Downsampling = "maxpool",
        up: Upsampling = "transpose",
        batch_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.stride = 2**depth
        self.inc = DoubleConv(in_channels, widths[0], batch_norm)
        self.downs = nn.ModuleList(
            Down(widths[i], widths[i + 1], down, batch_norm) for i in range(depth)
        )
        # The paper puts dropout at the end of the contracting path.
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], up, batch_norm) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x, size = pad_to_multiple(x, self.stride)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.dropout(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return crop_to(self.head(x), size)
