"""Convolution blocks shared by the hand-written networks."""

from torch import nn


class ConvBNReLU(nn.Sequential):
    """3x3 convolution -> (BatchNorm) -> ReLU, padded so the size is kept."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        batch_norm: bool = True,
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=not batch_norm,
            )
        ]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two ConvBNReLU blocks: the unit of every U-Net level."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__(
            ConvBNReLU(in_channels, out_channels, batch_norm=batch_norm),
            ConvBNReLU(out_channels, out_channels, batch_norm=batch_norm),
        )
