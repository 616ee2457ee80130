"""Predictor: one image (NumPy) in, probabilities or a mask at the image's resolution out."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_seg.errors import ConfigurationError
from lightning_seg.inference.checkpoints import DEFAULT_IMAGE_SIZE, load_task, resolve_device
from lightning_seg.inference.windows import RESIZE_LIMIT, blending_window, tile_starts
from lightning_seg.postprocess import postprocess_labels
from lightning_seg.tta import TTA_FLIPS, flip_averaged

if TYPE_CHECKING:
    pass


class Predictor:
    """Predicts probabilities and masks for whole images of any size with a trained checkpoint.

    Args:
        ckpt_path: a lightning_seg checkpoint (loaded with ``weights_only=True``).
        device: ``auto`` (CUDA if available, else CPU) or a torch device.
        tta: test-time augmentation: ``none``, ``hflip``, ``vflip`` or ``flips`` (identity,
            horizontal, vertical and both), averaged in probability space.
        sliding_window: True: always tiles at full resolution; False: always resize to the
            training size; None (auto): tiles if the checkpoint trained on tiles, resize if it
            trained on resized whole images, and when that is unknown, tiles only for images more
            than twice the training size in either side.
        tile: (height, width) of the sliding-window tiles; the training size by default.
        overlap: fraction of a tile that neighbouring tiles share, in [0, 1).
        batch_size: tiles per forward pass.
        threshold: binary foreground threshold; the checkpoint's (possibly tuned) by default.

    ``predict_probabilities(image)`` returns C x H x W float32 (C = 1 foreground probability for
    binary, else the softmax over classes); ``predict_mask(image)`` returns H x W class ids
    (0/1 for binary), uint8. Images are H x W x C (or H x W) uint8 arrays.
    """

    def __init__(
        self,
        ckpt_path: str | os.PathLike[str],
        device: str | torch.device = "auto",
        tta: str = "none",
        sliding_window: bool | None = None,
        tile: Sequence[int] | None = None,
        overlap: float = 0.5,
        batch_size: int = 4,
        threshold: float | None = None,
    ) -> None:
        self.device = resolve_device(device)
        task, settings = load_task(ckpt_path, self.device)
        self._configure(task, settings, tta, sliding_window, tile, overlap, batch_size, threshold)

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | os.PathLike[str], **options: Any) -> Predictor:
        """A predictor for a checkpoint written by ``fit`` (options as for the constructor)."""
        return cls(ckpt_path, **options)

    @classmethod
    def from_network(
        cls,
        network: nn.Module,
        settings: dict[str, Any],
        device: str | torch.device = "cpu",
        tta: str = "none",
        sliding_window: bool | None = None,
        tile: Sequence[int] | None = None,
        overlap: float = 0.5,
        batch_size: int = 4,
        threshold: float | None = None,
    ) -> Predictor:
        """A predictor around any module mapping normalised N x C x H x W images to logits, with
        :func:`inference_settings`-like ``settings`` (for stand-ins in tests, or networks loaded
        some other way)."""
        predictor = cls.__new__(cls)
        predictor.device = resolve_device(device)
        network = network.eval().to(predictor.device)
        predictor._configure(
            network, settings, tta, sliding_window, tile, overlap, batch_size, threshold
        )
        return predictor

    def _configure(
        self,
        network: nn.Module,
        settings: dict[str, Any],
        tta: str,
        sliding_window: bool | None,
        tile: Sequence[int] | None,
        overlap: float,
        batch_size: int,
        threshold: float | None,
    ) -> None:
        if tta not in TTA_FLIPS:
            raise ConfigurationError(f"unknown tta {tta!r}; choose one of {', '.join(TTA_FLIPS)}")
        if not 0.0 <= overlap < 1.0:
            raise ConfigurationError(f"overlap must be in [0, 1), not {overlap}")
        if batch_size < 1:
            raise ConfigurationError(f"batch size must be at least 1, not {batch_size}")
        self.network = network
        self.settings = settings
        self.num_classes = int(settings.get("num_classes", 1))
        self.in_channels = int(settings.get("in_channels", 3))
        self.image_size = tuple(int(s) for s in settings.get("image_size", DEFAULT_IMAGE_SIZE))
        self.tile = tuple(int(s) for s in (tile or self.image_size))
        if len(self.tile) != 2 or min(self.tile) < 1:
            raise ConfigurationError(f"tile must be two positive sizes (H W), not {tile}")
        self.overlap = float(overlap)
        self.steps = tuple(max(1, round(t * (1.0 - self.overlap))) for t in self.tile)
        self.batch_size = int(batch_size)
        self.tta = tta
        self.flips = TTA_FLIPS[tta]  # the passes per image (benchmarks report them)
        self.sliding_window = sliding_window
        self.threshold = float(settings.get("threshold", 0.5) if threshold is None else threshold)
        channels = len(settings["mean"])
        self._mean = torch.tensor(settings["mean"], dtype=torch.float32, device=self.device)
        self._std = torch.tensor(settings["std"], dtype=torch.float32, device=self.device)
        self._mean, self._std = self._mean.view(channels, 1, 1), self._std.view(channels, 1, 1)
        self._window = blending_window(*self.tile).to(self.device)

    @property
    def binary(self) -> bool:
        return self.num_classes == 1

    def uses_sliding_window(self, size: tuple[int, int]) -> bool:
        """Whether an image of ``size`` (height, width) goes through tiles rather than a resize."""
        if self.sliding_window is not None:
            return self.sliding_window
        tiled = self.settings.get("tiled")
        if tiled is not None:
            return bool(tiled)
        return any(s > RESIZE_LIMIT * t for s, t in zip(size, self.image_size, strict=True))

    # ------------------------------------------------------------------------- core
    def _channels(self, image: np.ndarray) -> np.ndarray:
        """H x W x ``in_channels`` uint8 from H x W, H x W x 1, x 3 or x 4 (alpha dropped)."""
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ConfigurationError(f"images must be uint8 arrays, not {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ConfigurationError(f"images must be H x W (x 1, 3 or 4), not {image.shape}")
        if image.shape[2] == 4:
            image = image[:, :, :3]
        if image.shape[2] == self.in_channels:
            return image
        if self.in_channels == 1:
            return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)[:, :, None]
        return np.repeat(image, self.in_channels, axis=2)

    def _normalise(self, image: np.ndarray) -> Tensor:
        """H x W x C uint8 -> 1 x C x H x W float, ``(pixel / 255 - mean) / std`` as training."""
        pixels = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        pixels = pixels.permute(2, 0, 1).float().div_(255.0)
        return ((pixels - self._mean) / self._std)[None]

    def _forward(self, batch: Tensor) -> Tensor:
        """Probabilities of a batch, averaged over the TTA flips (each flipped back first)."""
        chunks = [
            flip_averaged(self.network, chunk, self.tta, self.binary)
            for chunk in batch.split(self.batch_size)
        ]
        return torch.cat(chunks)

    def _resized(self, image: np.ndarray) -> Tensor:
        height, width = image.shape[:2]
        th, tw = self.image_size
        small = image
        if (height, width) != (th, tw):
            shrink = height * width > th * tw
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            small = cv2.resize(image, (tw, th), interpolation=interpolation).reshape(th, tw, -1)
        probs = self._forward(self._normalise(small))
        if (height, width) != (th, tw):
            probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
        return probs[0]

    def _sliding(self, image: np.ndarray) -> Tensor:
        height, width = image.shape[:2]
        (th, tw), (sy, sx) = self.tile, self.steps
        ys, xs = tile_starts(height, th, sy), tile_starts(width, tw, sx)
        full_h, full_w = ys[-1] + th, xs[-1] + tw
        # Reflect-pad the image to the tiled area, half of the extra on each side, so that every
        # tile holds image content and the image's own borders lie away from the padded edge.
        top, left = (full_h - height) // 2, (full_w - width) // 2
        mode = "reflect" if min(height, width) > 1 else "edge"
        padded = np.pad(
            image, ((top, full_h - height - top), (left, full_w - width - left), (0, 0)), mode
        )
        pixels = self._normalise(padded)
        channels = 1 if self.binary else self.num_classes
        total = torch.zeros(channels, full_h, full_w, device=self.device)
        weights = torch.zeros(1, full_h, full_w, device=self.device)
        origins = list(itertools.product(ys, xs))
        for start in range(0, len(origins), self.batch_size):
            chunk = origins[start : start + self.batch_size]
            tiles = torch.cat([pixels[:, :, y : y + th, x : x + tw] for y, x in chunk])
            probs = self._forward(tiles) * self._window
            for (y, x), tile_probs in zip(chunk, probs, strict=True):
                total[:, y : y + th, x : x + tw] += tile_probs
                weights[:, y : y + th, x : x + tw] += self._window
        return (total / weights)[:, top : top + height, left : left + width]

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray) -> Tensor:
        """Like :meth:`predict_probabilities`, as a tensor on the predictor's device."""
        image = self._channels(image)
        if self.uses_sliding_window(image.shape[:2]):
            return self._sliding(image)
        return self._resized(image)

    def predict_probabilities(self, image: np.ndarray) -> np.ndarray:
        """C x H x W float32 probabilities at the image's resolution (C = 1 for binary)."""
        return self.probabilities(image).cpu().numpy().astype(np.float32, copy=False)

    @torch.inference_mode()
    def labels(self, probabilities: Tensor) -> Tensor:
        """H x W class ids from C x H x W probabilities: threshold and the checkpoint's
        post-processing (binary) or argmax."""
        if self.binary:
            labels = (probabilities[0] > self.threshold).to(torch.uint8)
            return postprocess_labels(labels, self.settings.get("postprocess", "none"))
        return probabilities.argmax(dim=0)

    def predict_mask(self, image: np.ndarray) -> np.ndarray:
        """H x W class ids at the image's resolution: 0/1 for binary (thresholded), the argmax
        class for multiclass; uint8 (uint16 beyond 256 classes)."""
        labels = self.labels(self.probabilities(image)).cpu().numpy()
        return labels.astype(np.uint8 if self.num_classes <= 256 else np.uint16)
