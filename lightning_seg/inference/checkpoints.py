"""Checkpoints for inference: safe loading, the settings a checkpoint carries about its training
data (its :class:`~lightning_seg.preprocessing.Preprocessing`, threshold, post-processing), and
the task rebuilt from it."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home

import torch

from lightning_seg.errors import ConfigurationError, first_line
from lightning_seg.preprocessing import Preprocessing

if TYPE_CHECKING:
    from lightning_seg.task import SegmentationTask


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
        raise ConfigurationError(
            f"{path}: not a readable PyTorch checkpoint ({first_line(error)})"
        ) from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= set(
        checkpoint
    ):
        raise ConfigurationError(
            f"{path}: not a lightning_seg checkpoint (no state_dict and hyper_parameters)"
        )
    return checkpoint


def checkpoint_preprocessing(
    ckpt: dict[str, Any], ckpt_path: str | os.PathLike[str]
) -> tuple[Preprocessing, dict[str, str]]:
    """The :class:`Preprocessing` a checkpoint was trained with, and where each part came from.

    Checkpoints written by ``fit`` store it (``lightning_seg.preprocessing``; older ones a flat
    entry of the same fields). A checkpoint from elsewhere gets the defaults for its channels
    (ImageNet statistics for RGB, 0.5 / 0.25 for grey; 256 x 256; tiling unknown), and
    ``sources`` says so, so a caller can warn that they are a guess.
    """
    stored = ckpt.get("lightning_seg") or {}
    entry = dict(stored.get("preprocessing") or stored)
    hparams = ckpt.get("hyper_parameters") or {}
    entry.setdefault("channels", entry.get("in_channels") or hparams.get("in_channels") or 3)
    grey = int(entry["channels"]) == 1
    sources = {
        "normalisation": "checkpoint"
        if "mean" in entry and "std" in entry
        else "default (" + ("grey" if grey else "ImageNet") + ")",
        "image_size": "checkpoint" if entry.get("image_size") else "default",
    }
    try:
        return Preprocessing.from_dict(entry), sources
    except (ConfigurationError, TypeError, ValueError) as error:
        raise ConfigurationError(f"{ckpt_path}: bad preprocessing entry ({error})") from None


def inference_settings(ckpt: dict[str, Any], ckpt_path: str | os.PathLike[str]) -> dict[str, Any]:
    """How images must be prepared for this checkpoint, and what its outputs mean.

    Returns a dict with ``preprocessing`` (:class:`Preprocessing`), ``num_classes``,
    ``class_names``, ``threshold`` and ``postprocess`` (binary), ``tta`` (the test-time views
    ``test`` scored with), ``model`` and ``sources``
    (where the preprocessing came from: ``checkpoint`` or a default).
    """
    hparams = ckpt.get("hyper_parameters") or {}
    preprocessing, sources = checkpoint_preprocessing(ckpt, ckpt_path)
    num_classes = int(hparams.get("num_classes", 1))
    names = (ckpt.get("lightning_seg") or {}).get("class_names") or hparams.get("class_names")
    if not names:
        names = ["foreground"] if num_classes == 1 else [f"class_{i}" for i in range(num_classes)]
    return {
        "preprocessing": preprocessing,
        "num_classes": num_classes,
        "class_names": [str(n) for n in names],
        "threshold": float(hparams.get("threshold", 0.5)),
        "postprocess": str(hparams.get("postprocess", "none")),
        "tta": str(hparams.get("tta", "none")),
        "model": str(hparams.get("model", "")),
        "sources": sources,
    }


def without_pretrained_weights(model_args: dict[str, Any]) -> dict[str, Any]:
    """``model_args`` with every ``encoder_weights`` (an ensemble's members' too) set to None:
    rebuilding a checkpoint's network must not fetch weights that its own replace at once."""
    args = dict(model_args)
    if args.get("encoder_weights") is not None:
        args["encoder_weights"] = None
    if isinstance(args.get("members"), list):
        args["members"] = [
            without_pretrained_weights(m) if isinstance(m, dict) else m for m in args["members"]
        ]
    return args


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
    for key in ("compile", "tune_threshold", "freeze_encoder_bn"):  # training-only settings
        if key in hparams:
            hparams[key] = False
    hparams["model_args"] = without_pretrained_weights(hparams.get("model_args") or {})
    try:
        task = SegmentationTask(**hparams)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(
            f"{path}: cannot rebuild the model from its hyper-parameters ({error})"
        ) from None
    try:
        task.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise ConfigurationError(
            f"{path}: weights do not fit the model ({first_line(error)})"
        ) from None
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
