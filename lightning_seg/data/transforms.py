"""Albumentations pipelines from YAML: the same geometric transform for image, mask and weights.

A pipeline is a list of albumentations transforms by class name with their arguments::

    train_transforms:
      - {name: HorizontalFlip, p: 0.5}
      - {name: Affine, rotate: [-20, 20], p: 0.5}
      - {name: ColorJitter, brightness: 0.2, contrast: 0.2, p: 0.5}

Images arrive already decoded and resized by the cache, so pipelines only augment; normalisation
and the conversion to tensors happen after them (:func:`to_tensors`, with the datamodule's
:class:`~lightning_seg.preprocessing.Preprocessing`).
"""

from __future__ import annotations

import difflib
from typing import Any

import albumentations as A
import numpy as np
import torch

from lightning_seg.errors import ConfigurationError
from lightning_seg.preprocessing import Preprocessing

TransformSpec = list[dict[str, Any]]

# Flips and right-angle rotations keep every pixel; safe for dermoscopy, micro-CT and microscopy.
DEFAULT_TRAIN: TransformSpec = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "VerticalFlip", "p": 0.5},
    {"name": "RandomRotate90", "p": 0.5},
    {"name": "ColorJitter", "brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.02,
     "p": 0.5},
]  # fmt: skip
# Street scenes have an up and a down: flip left-right only.
SCENE_TRAIN: TransformSpec = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "ColorJitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "p": 0.5},
]


def build_transform(spec: TransformSpec | None) -> A.Compose | None:
    """An ``A.Compose`` applying ``spec`` to ``image``, ``mask`` and ``weight`` (as a mask)."""
    if not spec:
        return None
    transforms = []
    for item in spec:
        item = dict(item)
        name = item.pop("name", None)
        cls = getattr(A, name, None) if isinstance(name, str) else None
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            choices = [n for n in dir(A) if isinstance(getattr(A, n), type)]
            close = difflib.get_close_matches(str(name), choices, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigurationError(
                f"unknown albumentations transform {name!r} in {item | {'name': name}}{hint}"
            )
        try:
            transforms.append(cls(**item))
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"bad arguments for albumentations.{name}: {error}") from None
    return A.Compose(transforms, additional_targets={"weight": "mask"})


def to_tensors(
    image: np.ndarray,
    mask: np.ndarray,
    preprocessing: Preprocessing,
    weight: np.ndarray | None = None,
) -> dict[str, torch.Tensor]:
    """Normalise an H x W x C uint8 image to C x H x W float, and the mask to int64 class ids."""
    sample = {
        "image": torch.from_numpy(preprocessing.normalize(image)),
        "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64)),
    }
    if weight is not None:
        sample["weight"] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
    return sample
