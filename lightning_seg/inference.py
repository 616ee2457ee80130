"""Prediction on new images with a trained checkpoint: ``lightning-seg predict`` and Predictor.

A network only works on images prepared as in training, so everything here follows from what the
checkpoint says about its training data (:func:`inference_settings`): the normalisation, the
training image size, and whether training saw whole images resized to that size or tiles cut at
full resolution. Each image then reaches the network in one of two ways:

- **resize** (whole images): resized to the training size as the training cache did (area when
  shrinking, bilinear when enlarging), predicted, and the *probabilities* upsampled bilinearly to
  the original size, so the mask has the image's resolution and smooth outlines;
- **sliding window** (tiles): overlapping tiles of the training size at full resolution, each
  tile's probabilities weighted by a smooth 2-D window and accumulated, then divided by the summed
  weights. Tile borders, where a network sees the least context, count least, and the weights vary
  smoothly, so there are no seams.

Test-time augmentation averages probabilities (not logits, not labels) over flipped copies, each
flipped back first. Checkpoints load with ``weights_only=True``: a file that would run code when
unpickled is refused. Masks are written atomically and never over an input; unreadable inputs are
skipped, listed at the end, and make the command exit with status 1.
"""

from __future__ import annotations

import argparse
import itertools
import os
import pickle
import re
import secrets
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import Tensor, nn

from lightning_seg.data.io import DEFAULT_MAX_PIXELS, DataError, is_image_file, read_image
from lightning_seg.errors import ConfigurationError
from lightning_seg.postprocess import postprocess_labels
from lightning_seg.tta import TTA_FLIPS, flip_averaged

if TYPE_CHECKING:
    from lightning_seg.task import SegmentationTask

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY_MEAN, GREY_STD = (0.5,), (0.25,)
DEFAULT_IMAGE_SIZE = (256, 256)

# What older checkpoints (without the ``lightning_seg`` entry) leave out, by the datamodule named
# in the run's config.yaml: the normalisation its datasets used, its default image size, and
# whether it trained on tiles at full resolution (True) or whole images resized (False).
DATAMODULE_DEFAULTS: dict[str, dict[str, Any]] = {
    "SyntheticDataModule": {"mean": (0.5,) * 3, "std": (0.25,) * 3, "tiled": False},
    "SandstoneDataModule": {"mean": GREY_MEAN, "std": GREY_STD, "tiled": True},
    "CarvanaDataModule": {"image_size": (320, 480), "tiled": False},
    "CamVidDataModule": {"image_size": (352, 480), "tiled": False},
    "PH2DataModule": {"tiled": False},
    "FolderDataModule": {"tiled": False},
}


# Without knowing how training prepared images, an image more than this many times the training
# size in either side is predicted with a sliding window rather than shrunk.
RESIZE_LIMIT = 2.0
# Smallest weight of the blending window (relative to its peak 1), so that pixels near an image
# border, covered only by the edge of one tile, still get a well-defined value.
WINDOW_FLOOR = 0.01

# Mask overlay colours (RGB) by class id; class 0 (background) is left uncoloured.
PALETTE = np.array(
    [
        (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
        (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    ],
    dtype=np.uint8,
)  # fmt: skip


# ----------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint of tensors and plain containers only (``torch.load(weights_only=True)``).

    A pickle can name any Python callable to run while it is loaded; a checkpoint downloaded or
    shared is untrusted input, so anything beyond tensors, numbers, strings and containers is
    refused with a one-line :class:`ConfigurationError` instead of being executed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = f" such as {found.group(1)}" if found else ""
        raise ConfigurationError(
            f"{path}: not a plain-tensor checkpoint: it holds pickled Python objects{what}, "
            "which could run code when loaded, so it was refused (only tensors and plain "
            "containers are loaded)"
        ) from None
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigurationError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(
        checkpoint
    ):
        raise ConfigurationError(
            f"{path}: not a lightning_seg checkpoint (no state_dict and hyper_parameters)"
        )
    return checkpoint


def _run_config(ckpt_path: Path) -> dict[str, Any]:
    """The ``data`` section of ``config.yaml`` of the run that wrote the checkpoint, if any.

    The CLI writes checkpoints to ``runs/<exp>/<id>/checkpoints/`` and the config beside that
    folder; a checkpoint copied elsewhere has none, which is fine.
    """
    for folder in (ckpt_path.parent, ckpt_path.parent.parent):
        config = folder / "config.yaml"
        if config.is_file():
            try:
                data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
            except (yaml.YAMLError, OSError, AttributeError):
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def _size_pair(value: Any) -> tuple[int, int] | None:
    """(height, width) from an int side or a two-element sequence; None if it is neither."""
    if isinstance(value, int) and value > 0:
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(int(v) > 0 for v in value):
        return (int(value[0]), int(value[1]))
    return None


def inference_settings(ckpt: dict[str, Any], ckpt_path: str | os.PathLike[str]) -> dict[str, Any]:
    """How images must be prepared for this checkpoint, and what its outputs mean.

    Read, in order of trust, from the checkpoint's ``lightning_seg`` entry (written at training
    time: ``mean``, ``std``, ``image_size``, ``in_channels``, ``class_names``, optionally
    ``tiled``), its hyper-parameters, the run's ``config.yaml`` (``data.class_path`` and
    ``data.init_args``), and last the defaults: ImageNet statistics for 3 channels, (0.5,) /
    (0.25,) for grey, 256 x 256. ``sources`` says where each came from, so a caller can warn
    when it is a guess.

    Returns a dict with ``mean``, ``std`` (per channel, on pixels scaled to 0..1),
    ``image_size`` [h, w], ``in_channels``, ``num_classes``, ``class_names``, ``threshold``
    and ``postprocess`` (binary), ``tiled`` (True: trained on full-resolution tiles; False: on
    whole images resized to ``image_size``; None: unknown), ``model`` and ``sources``.
    """
    hparams = ckpt.get("hyper_parameters") or {}
    stored = ckpt.get("lightning_seg") or {}
    data = _run_config(Path(ckpt_path))
    class_name = str(data.get("class_path") or "").rsplit(".", 1)[-1]
    init_args = data.get("init_args") or {}
    known = DATAMODULE_DEFAULTS.get(class_name, {})
    sources: dict[str, str] = {}

    in_channels = int(stored.get("in_channels") or hparams.get("in_channels") or 3)
    if "mean" in stored and "std" in stored:
        mean, std = stored["mean"], stored["std"]
        sources["normalisation"] = "checkpoint"
    elif "mean" in known:
        mean, std = known["mean"], known["std"]
        sources["normalisation"] = f"defaults of {class_name} (run config)"
    else:
        grey = in_channels == 1
        mean, std = (GREY_MEAN, GREY_STD) if grey else (IMAGENET_MEAN, IMAGENET_STD)
        sources["normalisation"] = "default (" + ("grey" if grey else "ImageNet") + ")"
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) == 1 and in_channels > 1:
        mean, std = mean * in_channels, std * in_channels
    if len(mean) != in_channels or len(std) != in_channels or min(std) <= 0:
        raise ConfigurationError(
            f"{ckpt_path}: normalisation mean {mean} / std {std} does not fit "
            f"{in_channels} input channels"
        )

    size = _size_pair(stored.get("image_size"))
    sources["image_size"] = "checkpoint"
    if size is None:
        size = _size_pair(init_args.get("image_size")) or _size_pair(init_args.get("size"))
        sources["image_size"] = "run config"
    if size is None and "image_size" in known:
        size = known["image_size"]
        sources["image_size"] = f"defaults of {class_name}"
    if size is None:
        size = DEFAULT_IMAGE_SIZE
        sources["image_size"] = "default"

    tiled = stored.get("tiled", known.get("tiled"))
    num_classes = int(hparams.get("num_classes", 1))
    names = stored.get("class_names") or hparams.get("class_names")
    if not names:
        names = ["foreground"] if num_classes == 1 else [f"class_{i}" for i in range(num_classes)]
    return {
        "mean": mean,
        "std": std,
        "image_size": [int(size[0]), int(size[1])],
        "in_channels": in_channels,
        "num_classes": num_classes,
        "class_names": [str(n) for n in names],
        "threshold": float(hparams.get("threshold", 0.5)),
        "postprocess": str(hparams.get("postprocess", "none")),
        "tiled": None if tiled is None else bool(tiled),
        "model": str(hparams.get("model", "")),
        "sources": sources,
    }


def load_task(
    ckpt_path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[SegmentationTask, dict[str, Any]]:
    """Rebuild the :class:`SegmentationTask` of a checkpoint, in eval mode on ``device``, and its
    :func:`inference_settings`.

    The task is built from the stored hyper-parameters (keys starting with ``_`` are Lightning's
    bookkeeping), but never compiled, and pretrained encoder weights are not fetched: the
    checkpoint's own weights replace them at once.
    """
    from lightning_seg.task import SegmentationTask  # imports Lightning: only when needed

    path = Path(ckpt_path)
    checkpoint = load_checkpoint(path)
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    for key in ("compile", "tune_threshold"):
        if key in hparams:
            hparams[key] = False
    model_args = dict(hparams.get("model_args") or {})
    if model_args.get("encoder_weights") is not None:
        model_args["encoder_weights"] = None
        hparams["model_args"] = model_args
    try:
        task = SegmentationTask(**hparams)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(
            f"{path}: cannot rebuild the model from its hyper-parameters ({error})"
        ) from None
    try:
        task.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ConfigurationError(f"{path}: weights do not fit the model ({first})") from None
    task.eval().to(device)
    return task, inference_settings(checkpoint, path)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` (or None) is CUDA when available, else the CPU; anything else as torch reads it."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ConfigurationError(f"bad --device {device!r}: {error}") from None


# ----------------------------------------------------------------------------- blending
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


# ----------------------------------------------------------------------------- the predictor
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


# ----------------------------------------------------------------------------- writing
def mask_image(labels: np.ndarray, binary: bool) -> np.ndarray:
    """The mask as written: 0/255 for binary (visible in any viewer), class ids otherwise."""
    if binary:
        return (labels > 0).astype(np.uint8) * 255
    return labels


def overlay_image(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image (H x W x 3 or grey) with every non-background class painted at ``alpha`` in a
    fixed palette colour (class 0 is left as it is)."""
    rgb = image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image[..., :1], 3, 2)
    ids = labels.astype(np.int64)
    colours = PALETTE[np.where(ids > 0, (ids - 1) % (len(PALETTE) - 1) + 1, 0)]
    blended = rgb.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha
    out = np.where((ids > 0)[..., None], np.rint(blended), rgb.astype(np.float32))
    return out.astype(np.uint8)


def write_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write a PNG so that ``path`` is either absent, its old content, or the complete new file:
    encode to a temporary file in the same folder, then ``os.replace`` it (atomic on one file
    system). An interruption leaves no half-written mask, and the temporary file is removed."""
    buffer = BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    tmp = temporary_path(path)
    try:
        with tmp.open("xb") as file:
            file.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temporary_path(path: Path) -> Path:
    """A fresh hidden ``.tmp`` name beside ``path``: same file system, so ``os.replace`` is atomic.

    Opened with ``"xb"`` (not ``tempfile.mkstemp``, whose files are private, mode 0600), so the
    result gets the usual permissions of new files.
    """
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


@dataclass
class PredictReport:
    """What a prediction run did: masks written and inputs skipped, each with its error."""

    written: list[Path] = field(default_factory=list)
    skipped: list[DataError] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def collect_inputs(inputs: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """The files to predict, and the files left out of folders.

    A folder contributes its image files (by suffix, hidden files left out, not recursive); a
    file named explicitly is always tried, so a bad one is reported rather than passed over.
    """
    files: list[Path] = []
    ignored: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and is_image_file(child):
                    files.append(child)
                elif child.is_file():
                    ignored.append(child)
        else:
            files.append(path)
    return list(dict.fromkeys(files)), ignored


def output_names(files: Sequence[Path]) -> list[str]:
    """``<stem>.png`` per input; inputs that share a stem (``a.jpg``, ``a.png``, or one name in
    two folders) get ``<stem>_<suffix>`` and then a number, so no mask overwrites another."""
    names: list[str] = []
    taken: set[str] = set()
    for path in files:
        candidates = itertools.chain(
            (path.stem, f"{path.stem}_{path.suffix.lstrip('.').lower()}"),
            (f"{path.stem}_{i}" for i in itertools.count(2)),
        )
        name = next(c for c in candidates if c.lower() not in taken)
        taken.add(name.lower())
        names.append(f"{name}.png")
    return names


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(files: Sequence[Path], output: Path, names: Sequence[str], overlay: bool) -> None:
    """Refuse a run that could overwrite an input: an output folder that holds inputs, or any
    mask or overlay path that is an input file. Inputs are never written."""
    folders = {p.parent.resolve() for p in files}
    targets = [output / "overlays"] if overlay else []
    for folder in (output, *targets):
        if folder.resolve() in folders:
            raise ConfigurationError(
                f"--output {output} would put masks in {folder}, a folder that holds input "
                "images: choose another output folder (predict never writes over its inputs)"
            )
    for name in names:
        for target in (output / name, output / "overlays" / name):
            for source in files:
                if _same_file(target, source):
                    raise ConfigurationError(
                        f"{target} is an input image; choose another --output (predict never "
                        "writes over its inputs)"
                    )


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    output: Path,
    overlay: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> PredictReport:
    """Predict every file and write ``<output>/<stem>.png`` (and ``overlays/<stem>.png``).

    Unreadable files (missing, not images, truncated, corrupt, too many pixels) are skipped and
    recorded in the report; the others are still written.
    """
    from tqdm import tqdm

    names = output_names(files)
    check_outputs(files, output, names, overlay)
    output.mkdir(parents=True, exist_ok=True)
    if overlay:
        (output / "overlays").mkdir(exist_ok=True)
    report = PredictReport()
    channels = predictor.in_channels
    if channels not in (1, 3):
        raise ConfigurationError(f"predict reads 1- or 3-channel images, not {channels}")
    bar = tqdm(
        total=len(files),
        desc="predict",
        unit="image",
        file=sys.stderr,
        disable=not progress or len(files) <= 3,
        dynamic_ncols=True,
    )
    with bar:
        for path, name in zip(files, names, strict=True):
            try:
                image = read_image(path, channels, max_pixels=max_pixels)
            except DataError as error:
                report.skipped.append(error)
                bar.update()
                continue
            labels = predictor.labels(predictor.probabilities(image)).cpu().numpy()
            labels = labels.astype(np.uint8 if predictor.num_classes <= 256 else np.uint16)
            write_png_atomic(mask_image(labels, predictor.binary), output / name)
            if overlay:
                write_png_atomic(overlay_image(image, labels), output / "overlays" / name)
            report.written.append(output / name)
            bar.update()
    return report


# ----------------------------------------------------------------------------- command
def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--ckpt_path`` as every command spells it, ``--ckpt`` kept as an alias."""
    parser.add_argument(
        "--ckpt_path",
        "--ckpt",
        dest="ckpt",
        required=True,
        help="checkpoint (.ckpt) written by fit (--ckpt is an alias)",
    )


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg predict",
        description="Write one PNG mask per input image, at the image's own resolution: 0/255 "
        "for binary models, class ids for multiclass. Unreadable inputs are skipped, listed at "
        "the end and make the exit status 1. Inputs are never overwritten: an --output folder "
        "that holds inputs is refused.",
    )
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        help="image files and/or folders (a folder's image files, not recursive)",
    )
    parser.add_argument("--output", required=True, help="folder for <stem>.png masks")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="binary foreground threshold (default: the checkpoint's, possibly tuned)",
    )
    parser.add_argument(
        "--overlay", action="store_true", help="also write colour overlays to <output>/overlays/"
    )
    parser.add_argument(
        "--tta",
        choices=list(TTA_FLIPS),
        default="none",
        help="test-time augmentation averaged in probability space (flips: id, h, v, hv)",
    )
    parser.add_argument(
        "--sliding-window",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tiles at full resolution (--sliding-window) or resize to the training size "
        "(--no-sliding-window); default: as the model was trained (tiles for tiled training, "
        "resize for resized images; if unknown, tiles for images > 2x the training size)",
    )
    parser.add_argument(
        "--tile", type=int, nargs=2, metavar=("H", "W"), help="tile size (default: training size)"
    )
    parser.add_argument(
        "--overlap", type=float, default=0.5, help="fraction of a tile shared with neighbours"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:0")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images with more pixels (decompression-bomb guard; default %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _notices(settings: dict[str, Any]) -> Iterator[str]:
    sources = settings["sources"]
    if sources["normalisation"].startswith("default"):
        yield (
            f"note: the checkpoint does not record its normalisation; using "
            f"{sources['normalisation']} mean {settings['mean']} / std {settings['std']}"
        )
    if sources["image_size"] == "default":
        yield f"note: the checkpoint does not record its image size; using {settings['image_size']}"


def predict_command(argv: list[str]) -> int:
    """``lightning-seg predict``: 0 when every input was predicted, 1 when some were skipped.

    Configuration problems (missing or unsafe checkpoint, bad options, an output folder that
    holds inputs) raise :class:`ConfigurationError`, which the CLI prints as one line.
    """
    args = predict_parser().parse_args(argv)
    predictor = Predictor(
        args.ckpt,
        device=args.device,
        tta=args.tta,
        sliding_window=args.sliding_window,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        threshold=args.threshold,
    )
    files, ignored = collect_inputs(args.input)
    if not files:
        raise ConfigurationError(f"no image files in {' '.join(args.input)}")
    for line in _notices(predictor.settings):
        print(line, file=sys.stderr)
    output = Path(args.output)
    report = predict_files(
        predictor, files, output, args.overlay, args.max_pixels, progress=not args.no_progress
    )
    if ignored:
        print(f"ignored {len(ignored)} file(s) without an image suffix in the input folders")
    print(f"wrote {len(report.written)} mask(s) to {output}")
    if report.skipped:
        lines = "\n".join(f"  {error}" for error in report.skipped)
        print(f"skipped {len(report.skipped)} unreadable input(s):\n{lines}", file=sys.stderr)
        return 1
    return 0
