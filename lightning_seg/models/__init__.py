"""Network registry: experiment YAML names a network, :func:`build_model` builds it.

Every network maps ``in_channels`` to ``num_classes`` logits of shape N x C x H x W.
"""

import inspect
from collections.abc import Callable
from functools import partial
from typing import Any

from torch import nn

from lightning_seg.errors import ConfigurationError, unknown_choice
from lightning_seg.models.base import AuxiliaryOutput
from lightning_seg.models.ensemble import Ensemble
from lightning_seg.models.pspnet import PSPNet
from lightning_seg.models.segnet import SegNet
from lightning_seg.models.smp import SMPModel
from lightning_seg.models.unet import UNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    # The paper: max-pooling down, transposed convolution up.
    "unet": partial(UNet, down="maxpool", up="transpose"),
    # Max-pooling down, nearest-neighbour upsampling + 1x1 convolution up.
    "unet_upsample": partial(UNet, down="maxpool", up="nearest"),
    # Strided convolution down, transposed convolution up.
    "unet_convpool": partial(UNet, down="conv", up="transpose"),
    # The paper: VGG16 encoder, unpooling with the encoder's max-pooling indices.
    "segnet": partial(SegNet, upsampling="unpool"),
    # Nearest-neighbour upsampling instead of unpooling: no indices cross to the decoder.
    "segnet_upsample": partial(SegNet, upsampling="nearest"),
    # Dilated ResNet-18-like backbone (or an SMP/timm `encoder`), pyramid pooling, auxiliary head.
    "pspnet": PSPNet,
    # Any segmentation_models_pytorch architecture + encoder; local encoder_weights files too.
    "smp": SMPModel,
    # Two or more of the above trained side by side, predicting their mean logits.
    "ensemble": Ensemble,
}


def build_model(name: str, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name``; unknown names list the valid ones."""
    if name not in MODELS:
        raise unknown_choice("model", name, list(MODELS))
    builder = MODELS[name]
    try:  # an argument the network does not take, named before anything is built
        inspect.signature(builder).bind(in_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as error:
        raise ConfigurationError(f"model_args for model {name!r}: {error}") from None
    return builder(in_channels=in_channels, num_classes=num_classes, **kwargs)


__all__ = ["MODELS", "AuxiliaryOutput", "UNet", "build_model"]
