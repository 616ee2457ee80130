"""Post-processing of hard binary labels, shared by validation, ``test``, ``predict`` and files.

``largest_component`` keeps the largest connected foreground region and fills its holes: the
prior for datasets with one object per image (a skin lesion in PH2, a car in Carvana), where
stray specks and holes are always errors. nnU-Net chooses the same step on validation data; here
a recipe opts in (``model.postprocess``), and validation applies it too, so the best checkpoint
is chosen by the score that ``test`` and ``predict`` will give.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

Postprocess = Literal["none", "largest_component"]
POSTPROCESS: tuple[str, ...] = get_args(Postprocess)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected foreground region of a 0/1 H x W mask, holes filled.

    An empty mask stays empty; ties keep the region met first in raster order.
    """
    regions, count = ndimage.label(mask > 0, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(regions.ravel())[1:]
    kept = regions == (int(sizes.argmax()) + 1)
    return ndimage.binary_fill_holes(kept).astype(mask.dtype)


def postprocess_labels(labels: Tensor, method: str) -> Tensor:
    """Apply ``method`` to N x H x W (or H x W) binary labels, keeping dtype and device."""
    if method == "none":
        return labels
    if method != "largest_component":
        raise ValueError(f"unknown postprocess {method!r}; choose one of {', '.join(POSTPROCESS)}")
    array = labels.detach().cpu().numpy()
    flat = array.reshape(-1, *array.shape[-2:])
    done = np.stack([largest_component(m) for m in flat]).reshape(array.shape)
    return torch.from_numpy(done).to(device=labels.device, dtype=labels.dtype)
