"""PSPNet (Zhao et al., 2017), read beside the paper's Figure 3.

A classifier backbone sees little context at full resolution and loses detail at 1/32, so the
backbone is a "dilated network": its last two stages keep stride 1 and dilate their convolutions
by 2 and 4 instead, which keeps the receptive field growing while the feature map (b) stays at 1/8
of the input. The pyramid pooling module (c) then adds global context: it average-pools the
feature map into 1x1, 2x2, 3x3 and 6x6 bins, reduces each pooled map to ``1/len(bins)`` of the
channels, upsamples them back and concatenates them with the features, so every pixel's
prediction (d) sees the whole image at several granularities. An auxiliary head on the third
stage adds a deeply supervised loss (weight 0.4 in the paper) that eases optimising the deep
backbone; it is only computed in training mode and only the main head is used at test time.

The hand-written backbone is ResNet-18-like (basic blocks, ``layers=(2, 2, 2, 2)``) with the
paper's deep stem of three 3x3 convolutions. ``encoder`` swaps it for any SMP or timm (``tu-``)
encoder, dilated to output stride 8 by SMP; ``layers`` and ``base_channels`` are then unused.
Logits are upsampled bilinearly to the input size, so any input size works.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_seg.models.base import AuxiliaryOutput
from lightning_seg.models.blocks import ConvBNReLU


def upsample(x: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# ------------------------------------------------------------------------- (b) backbone
class BasicBlock(nn.Module):
    """ResNet basic block whose 3x3 convolutions may be dilated instead of strided."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1
    ) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_channels, out_channels, stride=stride, dilation=dilation)
        self.conv2 = nn.Sequential(
            nn.Conv2d(
                out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False
            ),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class DilatedResNet(nn.Module):
    """ResNet with a deep stem and output stride 8: stages 3 and 4 dilate instead of striding.

    ``forward`` returns the third stage's features (for the auxiliary head) and the fourth's
    (for the pyramid pooling module), both at 1/8 of the input.
    """

    def __init__(
        self,
        in_channels: int = 3,
        layers: tuple[int, int, int, int] = (2, 2, 2, 2),
        base_channels: int = 64,
    ) -> None:
        super().__init__()
        stem = max(base_channels // 2, 1)
        self.stem = nn.Sequential(
            ConvBNReLU(in_channels, stem, stride=2),
            ConvBNReLU(stem, stem),
            ConvBNReLU(stem, base_channels),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        widths = [base_channels * 2**i for i in range(4)]
        strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
        inputs = [base_channels, *widths[:-1]]
        self.stages = nn.ModuleList(
            nn.Sequential(
                BasicBlock(inputs[i], widths[i], strides[i], dilations[i]),
                *(BasicBlock(widths[i], widths[i], 1, dilations[i]) for _ in range(layers[i] - 1)),
            )
            for i in range(4)
        )
        self.out_channels = (widths[2], widths[3])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features[2], features[3]


class EncoderBackbone(nn.Module):
    """An SMP / timm encoder dilated to output stride 8, with DilatedResNet's interface."""

    def __init__(self, name: str, in_channels: int, weights: str | None) -> None:
        super().__init__()
        # Imported here: SMP pulls in timm and huggingface_hub, only needed for this option.
        from segmentation_models_pytorch.encoders import get_encoder

        from lightning_seg.models.weights import load_encoder_weights, looks_like_path

        # A local weights file loads as for `model: smp` (offline machines); names download.
        local = weights is not None and looks_like_path(str(weights))
        self.encoder = get_encoder(
            name, in_channels=in_channels, depth=5, weights=None if local else weights,
            output_stride=8,
        )  # fmt: skip
        if local:
            load_encoder_weights(self.encoder, str(weights))
        channels = self.encoder.out_channels
        self.out_channels = (channels[-2], channels[-1])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.encoder(x)
        return features[-2], features[-1]


# ------------------------------------------------------------------------- (c) pyramid pooling
class PyramidPoolingModule(nn.Module):
    """Pool into ``bin`` x ``bin`` sub-regions per level, reduce, upsample, concatenate."""

    def __init__(self, in_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(level), ConvBNReLU(in_channels, reduced, 1))
            for level in bins
        )
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(upsample(branch(x), size) for branch in self.branches)], dim=1)


# ------------------------------------------------------------------------- (d) prediction
class Head(nn.Sequential):
    """3x3 convolution -> BN -> ReLU -> dropout -> 1x1 convolution to the class logits."""

    def __init__(self, in_channels: int, channels: int, num_classes: int) -> None:
        super().__init__(
            ConvBNReLU(in_channels, channels),
            nn.Dropout2d(0.1),
            nn.Conv2d(channels, num_classes, kernel_size=1),
        )


class PSPNet(nn.Module):
    """Pyramid Scene Parsing Network: dilated backbone, pyramid pooling, auxiliary head."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        layers: tuple[int, int, int, int] = (2, 2, 2, 2),
        base_channels: int = 64,
        bins: tuple[int, ...] = (1, 2, 3, 6),
        aux_weight: float = 0.4,
        encoder: str | None = None,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        if not bins:
            raise ValueError("bins must name at least one pyramid level")
        self.backbone: DilatedResNet | EncoderBackbone
        if encoder is None:
            self.backbone = DilatedResNet(in_channels, layers, base_channels)
        else:
            self.backbone = EncoderBackbone(encoder, in_channels, encoder_weights)
        aux_channels, channels = self.backbone.out_channels
        self.pyramid_pooling = PyramidPoolingModule(channels, tuple(bins))
        # The 3x3 convolutions of both heads are a quarter of their input (512 for ResNet-50).
        self.head = Head(self.pyramid_pooling.out_channels, max(channels // 4, 1), num_classes)
        self.aux_weight = aux_weight
        self.pretrained = encoder is not None and encoder_weights is not None
        self.aux_head = (
            Head(aux_channels, max(aux_channels // 4, 1), num_classes) if aux_weight > 0 else None
        )

    @property
    def pretrained_encoder(self) -> nn.Module | None:
        """The SMP / timm encoder when it holds pretrained weights."""
        return self.backbone if self.pretrained else None

    def forward(self, x: Tensor) -> Tensor | AuxiliaryOutput:
        aux_features, features = self.backbone(x)
        logits = upsample(self.head(self.pyramid_pooling(features)), x.shape[-2:])
        if self.training and self.aux_head is not None:
            # At 1/8 of the input: the task upsamples it to the mask.
            return AuxiliaryOutput(logits, ((self.aux_head(aux_features), self.aux_weight),))
        return logits
