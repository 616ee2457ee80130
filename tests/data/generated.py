"""Small generated datasets for the data tests: RGB scenes with 3-class palette masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from lightning_seg.data import FolderDataModule

PALETTE = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]


def scene(rng: np.random.Generator, h: int = 40, w: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image and a 3-class mask of two rectangles."""
    mask = np.zeros((h, w), np.uint8)
    y, x = rng.integers(2, h // 2), rng.integers(2, w // 2)
    mask[y : y + h // 3, x : x + w // 3] = 1
    mask[h // 2 :, w // 2 : w // 2 + 8] = 2
    image = (np.asarray(PALETTE, np.uint8)[mask] // 2 + rng.integers(0, 60, (h, w, 3))).astype(
        np.uint8
    )
    return image, mask


def make_folder(root: Path, n: int = 10, mask_format: str = "png") -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, mask = scene(rng)
        Image.fromarray(image).save(root / "images" / f"case{i:02d}.jpg", quality=95)
        colour = np.asarray(PALETTE, np.uint8)[mask]
        if mask_format == "jpg":
            Image.fromarray(colour).save(root / "masks" / f"case{i:02d}.jpg", quality=75)
        else:
            Image.fromarray(colour).save(root / "masks" / f"case{i:02d}.png")
    return root


def folder_dm(
    root: Path, cls: type[FolderDataModule] = FolderDataModule, **kwargs
) -> FolderDataModule:
    options = {
        "root": str(root),
        "masks": {"type": "palette", "colors": [list(c) for c in PALETTE]},
        "num_classes": 3,
        "image_size": 32,
        "batch_size": 4,
        "num_workers": 0,
        "mask_suffix": ".png",
    }
    return cls(**(options | kwargs))
