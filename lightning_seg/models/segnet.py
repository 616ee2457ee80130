"""SegNet (Badrinarayanan, Kendall and Cipolla, 2017), read beside the paper's Figure 2/3.

The encoder is VGG16's 13 convolutions without its fully connected layers; each of its five stages
ends in 2x2 max-pooling that remembers where each maximum came from (the "max-pooling indices").
The decoder's upsampling puts every value back at that position and leaves zeros elsewhere, so the
sparse map keeps the boundary locations that pooling threw away without storing (and copying) the
encoder's feature maps as U-Net does; the convolutions that follow densify it. Only the indices
cross from encoder to decoder, which is SegNet's memory advantage.

``upsampling="nearest"`` or ``"bilinear"`` replaces unpooling with plain interpolation (the
simplified SegNet some courses teach); the decoder then gets no boundary information from the
encoder at all, which is what the comparison with ``"unpool"`` shows.

As in the paper every convolution is followed by batch normalisation and ReLU, the decoder stage
of each encoder stage mirrors its convolutions (its last one maps to the next-shallower stage's
width) and a 1x1 convolution, the paper's pixel-wise soft-max classifier without the soft-max,
produces the logits. (The authors' Caffe model folds the last decoder convolution into a 3x3
classifier instead.) Inputs are padded to a multiple of 32 and the output is cropped back.
"""

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lightning_seg.models.base import crop_to, pad_to_multiple
from lightning_seg.models.blocks import ConvBNReLU

Upsampling = Literal["unpool", "nearest", "bilinear"]

# VGG16 without its fully connected layers: (width as a multiple of base_channels, convolutions).
VGG16_STAGES: tuple[tuple[int, int], ...] = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))


class EncoderStage(nn.Module):
    """VGG stage: ``num_convs`` 3x3 convolutions, then 2x2 max-pooling (remembering the argmax).

    Returns the pooled features, the max-pooling indices (None when the decoder does not unpool)
    and the size before pooling, which the decoder needs to undo it for odd sizes.
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int, indices: bool) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            ConvBNReLU(in_channels, out_channels),
            *(ConvBNReLU(out_channels, out_channels) for _ in range(num_convs - 1)),
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=indices)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, tuple[int, int]]:
        x = self.convs(x)
        size = (x.shape[-2], x.shape[-1])
        if self.pool.return_indices:
            pooled, indices = self.pool(x)
            return pooled, indices, size
        return self.pool(x), None, size


class DecoderStage(nn.Module):
    """Mirror of an encoder stage: upsample x2, then ``num_convs`` 3x3 convolutions.

    With ``"unpool"`` the upsampling is ``MaxUnpool2d`` with the matching encoder stage's indices;
    otherwise nearest / bilinear interpolation. The last convolution maps to ``out_channels``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, num_convs: int, upsampling: Upsampling
    ) -> None:
        super().__init__()
        if upsampling not in ("unpool", "nearest", "bilinear"):
            raise ValueError(
                f"unknown upsampling {upsampling!r}; choose 'unpool', 'nearest' or 'bilinear'"
            )
        self.upsampling = upsampling
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2) if upsampling == "unpool" else None
        self.convs = nn.Sequential(
            *(ConvBNReLU(in_channels, in_channels) for _ in range(num_convs - 1)),
            ConvBNReLU(in_channels, out_channels),
        )

    def forward(self, x: Tensor, indices: Tensor | None, size: tuple[int, int]) -> Tensor:
        if self.unpool is not None:
            x = self.unpool(x, indices, output_size=size)
        else:
            align = False if self.upsampling == "bilinear" else None
            x = F.interpolate(x, size=size, mode=self.upsampling, align_corners=align)
        return self.convs(x)


class SegNet(nn.Module):
    """SegNet: VGG16 encoder, mirrored decoder upsampling with the encoder's pooling indices."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        base_channels: int = 64,
        upsampling: Upsampling = "unpool",
    ) -> None:
        super().__init__()
        widths = [base_channels * multiple for multiple, _ in VGG16_STAGES]
        convs = [num_convs for _, num_convs in VGG16_STAGES]
        self.stride = 2 ** len(VGG16_STAGES)
        indices = upsampling == "unpool"
        inputs = [in_channels, *widths[:-1]]
        self.encoder = nn.ModuleList(
            EncoderStage(inputs[i], widths[i], convs[i], indices) for i in range(len(widths))
        )
        # Deepest stage first; each ends at the next-shallower width (the first stage keeps its).
        outputs = [widths[0], *widths[:-1]]
        self.decoder = nn.ModuleList(
            DecoderStage(widths[i], outputs[i], convs[i], upsampling)
            for i in reversed(range(len(widths)))
        )
        self.classifier = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x, input_size = pad_to_multiple(x, self.stride)
        pooling: list[tuple[Tensor | None, tuple[int, int]]] = []
        for stage in self.encoder:
            x, indices, size = stage(x)
            pooling.append((indices, size))
        for stage in self.decoder:
            indices, size = pooling.pop()
            x = stage(x, indices, size)
        return crop_to(self.classifier(x), input_size)
