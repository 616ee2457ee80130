"""Checkpoints for inference: safe loading, the settings a checkpoint implies about its training
data (normalisation, size, tiling, threshold, post-processing), and the task rebuilt from it."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home

import torch
import yaml

from lightning_seg.errors import ConfigurationError

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
