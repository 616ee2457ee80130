"""How pixels become network input: one object that training, W&B images, ``predict`` and the
ONNX metadata share, and the pure functions that apply it.

A model is only as good as the agreement between how its training images were prepared and how
new images are: the same size (or tiles of it), the same resize interpolation, the same channels
and the same normalisation. :class:`Preprocessing` holds those settings; the datamodule owns it,
the checkpoint stores it (``to_dict``), and the predictor and the exporter read it back
(``from_dict``), so nothing is written down twice. A pretrained encoder replaces the
normalisation with its own (:meth:`Preprocessing.with_normalization`): EfficientNet-Lite was
trained on ``(pixel - 0.5) / 0.5``, not on ImageNet's statistics.

The functions (resize, tiles, normalise, pad to the network's stride) work on NumPy arrays, except
:func:`pad_to_stride`, which pads tensors inside networks and exported graphs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_seg.errors import ConfigurationError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Grey micro-CT and microscopy: pixels spread over the whole range, centred.
GREY_MEAN, GREY_STD = (0.5,), (0.25,)

# "auto": area averaging when shrinking (no aliasing), bilinear when enlarging.
Interpolation = Literal["auto", "area", "linear", "cubic", "nearest"]
_CV2_INTERPOLATION = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


def default_normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's statistics for RGB, the grey defaults otherwise (repeated per channel)."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return GREY_MEAN * channels, GREY_STD * channels


def _size_pair(value: int | Sequence[int]) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or min(int(side) for side in size) < 1:
        raise ConfigurationError(
            f"image_size must be one side or (height, width), each >= 1; got {value}"
        )
    return int(size[0]), int(size[1])


@dataclass(frozen=True)
class Preprocessing:
    """How an image file's pixels become the network's input.

    Attributes:
        image_size: (height, width) that whole images are resized to, or the tile size when
            ``tiled`` (large images cut into tiles at full resolution instead of shrunk).
        tiled: train on tiles and predict with a sliding window, rather than resize; None:
            unknown (a checkpoint that does not say), so predict decides by the image's size.
        interpolation: how images are resized (masks always use nearest).
        mean, std: per channel, on pixels scaled to [0, 1]: ``(pixel / 255 - mean) / std``.
        channels: input channels (1 grey, 3 RGB).
        stride: the network pads H and W to a multiple of this (reflection) and crops back.
    """

    image_size: tuple[int, int] = (256, 256)
    tiled: bool | None = False
    interpolation: Interpolation = "auto"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    stride: int = 1

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the fields once, here
        set_(self, "image_size", _size_pair(self.image_size))
        mean, std = tuple(map(float, self.mean)), tuple(map(float, self.std))
        if len(mean) == 1 and self.channels > 1:
            mean, std = mean * self.channels, std * self.channels
        if len(mean) != self.channels or len(std) != self.channels or min(std) <= 0:
            raise ConfigurationError(
                f"normalisation mean {list(mean)} / std {list(std)} does not fit "
                f"{self.channels} input channel(s) (one positive std per channel)"
            )
        set_(self, "mean", mean)
        set_(self, "std", std)
        if self.interpolation not in get_args(Interpolation):
            raise ConfigurationError(
                f"unknown interpolation {self.interpolation!r}; choose one of "
                f"{', '.join(get_args(Interpolation))}"
            )
        if int(self.stride) < 1:
            raise ConfigurationError(f"stride must be >= 1, got {self.stride}")

    # ------------------------------------------------------------------ storing
    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (checkpoints are loaded with ``weights_only=True``)."""
        return {
            "image_size": list(self.image_size),
            "tiled": self.tiled,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "channels": self.channels,
            "stride": self.stride,
        }

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Preprocessing:
        """Read :meth:`to_dict`'s output, or the flat entry of older checkpoints (``mean``,
        ``std``, ``image_size``, ``in_channels``, ``tiled``)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in stored.items() if k in fields and v is not None}
        values.setdefault("tiled", None)
        if "channels" not in values and stored.get("in_channels"):
            values["channels"] = int(stored["in_channels"])
        values.setdefault("channels", len(values.get("mean", ())) or 3)
        if "mean" not in values or "std" not in values:
            values["mean"], values["std"] = default_normalization(values["channels"])
        return cls(**values)

    def with_normalization(self, mean: Sequence[float], std: Sequence[float]) -> Preprocessing:
        return dataclasses.replace(self, mean=tuple(mean), std=tuple(std))

    def with_stride(self, stride: int) -> Preprocessing:
        return dataclasses.replace(self, stride=max(1, int(stride)))

    def array_key(self) -> dict[str, Any]:
        """The settings that shape decoded arrays (a cache of them is keyed by these)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("mean", "std", "stride")}

    # ------------------------------------------------------------------ applying
    def resize(self, image: np.ndarray) -> np.ndarray:
        """H x W (x C) uint8 at ``image_size``, with this object's interpolation."""
        return resize_image(image, self.image_size, self.interpolation)

    def pieces(
        self, image: np.ndarray, mask: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        """The training samples of one decoded pair: resized once, or cut into tiles; each with
        a suffix that names the tile (``#top,left``)."""
        height, width = self.image_size
        if not self.tiled:
            yield (
                self.resize(image).reshape(height, width, -1),
                resize_mask(mask, self.image_size),
                "",
            )
            return
        for top, left in tile_origins(image.shape[:2], self.image_size):
            yield (
                image[top : top + height, left : left + width].reshape(height, width, -1),
                mask[top : top + height, left : left + width],
                tile_name(top, left),
            )

    def piece_names(self, size: tuple[int, int]) -> list[str]:
        """The suffixes :meth:`pieces` gives an image of ``size`` (height, width), without
        decoding it: ``[""]`` for a resized image, ``#top,left`` for each tile."""
        if not self.tiled:
            return [""]
        return [tile_name(top, left) for top, left in tile_origins(size, self.image_size)]

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """H x W x C uint8 -> C x H x W float32 network input."""
        return normalize(image, self.mean, self.std)

    def display(self, image: Tensor) -> np.ndarray:
        """Undo :meth:`normalize` on a C x H x W tensor: H x W (x 3) uint8 to look at."""
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        pixels = ((image.detach().float().cpu() * std + mean).clamp(0, 1) * 255).byte()
        pixels = pixels.permute(1, 2, 0).numpy()
        return pixels[..., 0] if pixels.shape[2] == 1 else pixels

    def with_channels(self, image: np.ndarray) -> np.ndarray:
        """H x W x ``channels`` uint8 from an H x W, x 1, x 3 or x 4 (alpha dropped) array."""
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ConfigurationError(f"images must be uint8 arrays, not {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ConfigurationError(f"images must be H x W (x 1, 3 or 4), not {image.shape}")
        image = image[:, :, :3]
        if image.shape[2] == self.channels:
            return image
        if self.channels == 1:
            return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[:, :, None]
        return np.repeat(image[:, :, :1], self.channels, axis=2)


def resize_image(
    image: np.ndarray, size: tuple[int, int], interpolation: Interpolation = "auto"
) -> np.ndarray:
    """``image`` at (height, width) ``size``; ``auto`` averages areas when shrinking."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    if interpolation == "auto":
        shrink = image.shape[0] * image.shape[1] > height * width
        interpolation = "area" if shrink else "linear"
    resized = cv2.resize(image, (width, height), interpolation=_CV2_INTERPOLATION[interpolation])
    return resized.reshape(height, width, *image.shape[2:])


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Class ids at ``size``: nearest neighbour, so no new (in-between) ids appear."""
    if mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def tile_name(top: int, left: int) -> str:
    """How a tile is named after its image file: ``#top,left`` of its corner in pixels."""
    return f"#{top},{left}"


def tile_origins(size: tuple[int, int], tile: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of tiles covering an image; the last row and column are shifted inwards
    so that every tile lies inside the image (images smaller than a tile are an error)."""
    (height, width), (th, tw) = size, tile
    if height < th or width < tw:
        raise ConfigurationError(f"image of {width}x{height} is smaller than the {tw}x{th} tile")
    rows = sorted({*range(0, height - th + 1, th), height - th})
    cols = sorted({*range(0, width - tw + 1, tw), width - tw})
    return [(top, left) for top in rows for left in cols]


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """H x W x C uint8 -> C x H x W float32, ``(pixel / 255 - mean) / std``."""
    pixels = image.astype(np.float32) * np.float32(1 / 255)
    pixels = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def pad_to_stride(x: Tensor, stride: int, mode: str = "reflect") -> Tensor:
    """Pad H and W of an N x C x H x W tensor up to a multiple of ``stride`` (reflection keeps
    the image statistics at the border).

    The pad is computed from the tensor's shape without a Python ``if`` on it, so a traced or
    exported graph pads correctly at every input size, not only at the example's.
    """
    height, width = x.shape[-2], x.shape[-1]
    pad_h = (stride - height % stride) % stride
    pad_w = (stride - width % stride) % stride
    return F.pad(x, [0, pad_w, 0, pad_h], mode=mode)
