"""Predictor: one image (NumPy) in, probabilities or a mask at the image's resolution out."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_seg.errors import ConfigurationError
from lightning_seg.inference.checkpoints import load_task, resolve_device
from lightning_seg.inference.windows import RESIZE_LIMIT, blending_window, tile_starts
from lightning_seg.postprocess import postprocess_labels
from lightning_seg.preprocessing import Preprocessing
from lightning_seg.tta import TTA_VIEWS, view_averaged


@dataclass(frozen=True)
class PredictOptions:
    """How a :class:`Predictor` predicts (the checkpoint says how images are prepared).

    Args:
        tta: test-time augmentation: ``none``, ``hflip``, ``vflip``, ``flips`` (identity,
            horizontal, vertical and both), ``d4`` (the flips and their transposes: all eight
            right-angle symmetries) or ``flips_scales`` (the flips at 7/8, 1 and 9/8 of the
            input size), averaged in probability space. ``None``: the checkpoint's
            (``model.tta``, what ``test`` scored and the threshold was tuned with).
        sliding_window: True: always tiles at full resolution; False: always resize to the
            training size; None (auto): tiles if the checkpoint trained on tiles, resize if it
            trained on resized whole images, and when that is unknown, tiles only for images more
            than twice the training size in either side.
        tile: (height, width) of the sliding-window tiles; the training size by default.
        overlap: fraction of a tile that neighbouring tiles share, in [0, 1).
        batch_size: tiles per forward pass.
        threshold: binary foreground threshold; the checkpoint's (possibly tuned) by default.
    """

    tta: str | None = None
    sliding_window: bool | None = None
    tile: Sequence[int] | None = None
    overlap: float = 0.5
    batch_size: int = 4
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.tta is not None and self.tta not in TTA_VIEWS:
            raise ConfigurationError(
                f"unknown tta {self.tta!r}; choose one of {', '.join(TTA_VIEWS)}"
            )
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigurationError(f"overlap must be in [0, 1), not {self.overlap}")
        if self.batch_size < 1:
            raise ConfigurationError(f"batch size must be at least 1, not {self.batch_size}")
        if self.tile is not None and (len(self.tile) != 2 or min(self.tile) < 1):
            raise ConfigurationError(f"tile must be two positive sizes (H W), not {self.tile}")


class Predictor:
    """Predicts probabilities and masks for whole images of any size with a trained checkpoint.

    Args:
        ckpt_path: a lightning_seg checkpoint (loaded with ``weights_only=True``).
        device: ``auto`` (CUDA if available, else CPU) or a torch device.
        **options: the fields of :class:`PredictOptions` (``tta``, ``sliding_window``, ``tile``,
            ``overlap``, ``batch_size``, ``threshold``).

    Images are prepared with the checkpoint's :class:`~lightning_seg.preprocessing.Preprocessing`
    (channels, size or tiles, normalisation), exactly as training prepared them.
    ``predict_probabilities(image)`` returns C x H x W float32 (C = 1 foreground probability for
    binary, else the softmax over classes); ``predict_mask(image)`` returns H x W class ids
    (0/1 for binary), uint8. Images are H x W x C (or H x W) uint8 arrays.
    """

    def __init__(
        self, ckpt_path: str | os.PathLike[str], device: str | torch.device = "auto", **options: Any
    ) -> None:
        self.device = resolve_device(device)
        task, settings = load_task(ckpt_path, self.device)
        self._configure(task, settings, PredictOptions(**options))

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
        **options: Any,
    ) -> Predictor:
        """A predictor around any module mapping normalised N x C x H x W images to logits, with
        :func:`inference_settings`-like ``settings`` (for stand-ins in tests, or networks loaded
        some other way)."""
        predictor = cls.__new__(cls)
        predictor.device = resolve_device(device)
        network = network.eval().to(predictor.device)
        predictor._configure(network, settings, PredictOptions(**options))
        return predictor

    def _configure(
        self, network: nn.Module, settings: dict[str, Any], options: PredictOptions
    ) -> None:
        self.network = network
        self.settings = settings
        self.options = options
        self.preprocessing: Preprocessing = settings["preprocessing"]
        self.num_classes = int(settings.get("num_classes", 1))
        self.tile = tuple(int(s) for s in (options.tile or self.preprocessing.image_size))
        self.steps = tuple(max(1, round(t * (1.0 - options.overlap))) for t in self.tile)
        threshold = options.threshold
        self.threshold = float(settings.get("threshold", 0.5) if threshold is None else threshold)
        self.tta = options.tta or str(settings.get("tta", "none"))
        self._window = blending_window(*self.tile).to(self.device)

    @property
    def in_channels(self) -> int:
        return self.preprocessing.channels

    @property
    def binary(self) -> bool:
        return self.num_classes == 1

    def uses_sliding_window(self, size: tuple[int, int]) -> bool:
        """Whether an image of ``size`` (height, width) goes through tiles rather than a resize."""
        if self.options.sliding_window is not None:
            return self.options.sliding_window
        tiled = self.preprocessing.tiled
        if tiled is not None:
            return bool(tiled)
        training = self.preprocessing.image_size
        return any(s > RESIZE_LIMIT * t for s, t in zip(size, training, strict=True))

    # ------------------------------------------------------------------------- core
    def _normalise(self, image: np.ndarray) -> Tensor:
        """H x W x C uint8 -> 1 x C x H x W float on the device, normalised as in training."""
        return torch.from_numpy(self.preprocessing.normalize(image)).to(self.device)[None]

    def _forward(self, batch: Tensor) -> Tensor:
        """Probabilities of a batch, averaged over the TTA views (each mapped back first)."""
        chunks = [
            view_averaged(self.network, chunk, self.tta, self.binary)
            for chunk in batch.split(self.options.batch_size)
        ]
        return torch.cat(chunks)

    def _resized(self, image: np.ndarray) -> Tensor:
        height, width = image.shape[:2]
        probs = self._forward(self._normalise(self.preprocessing.resize(image)))
        if (height, width) != self.preprocessing.image_size:
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
        batch_size = self.options.batch_size
        for start in range(0, len(origins), batch_size):
            chunk = origins[start : start + batch_size]
            tiles = torch.cat([pixels[:, :, y : y + th, x : x + tw] for y, x in chunk])
            probs = self._forward(tiles) * self._window
            for (y, x), tile_probs in zip(chunk, probs, strict=True):
                total[:, y : y + th, x : x + tw] += tile_probs
                weights[:, y : y + th, x : x + tw] += self._window
        return (total / weights)[:, top : top + height, left : left + width]

    @torch.inference_mode()
    def probabilities(self, image: np.ndarray) -> Tensor:
        """Like :meth:`predict_probabilities`, as a tensor on the predictor's device."""
        image = self.preprocessing.with_channels(image)
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
