"""Carvana (Kaggle, 2017): 5,088 photos of 318 cars, 16 views each, 1918x1280, binary car masks.

Kaggle layout::

    train/<car id>_<view>.jpg          JPEG photos
    train_masks/<car id>_<view>_mask.gif   palette GIF masks (0 background, 1 car)

The 16 views of one car are near-duplicates, so the split groups by car id: no car has views in
two splits, which would leak the validation set into training. Images are resized once (to
``image_size``) and, with ``train_crop``, randomly cropped for training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_seg.data.files import FileDataModule, Pair
from lightning_seg.data.io import DataError
from lightning_seg.data.masks import BinaryMask, MaskDecoder
from lightning_seg.data.splits import grouped_split
from lightning_seg.data.transforms import SCENE_TRAIN


def car_id(path: Path) -> str:
    """``0cdf5b5d0ce1_01.jpg`` -> ``0cdf5b5d0ce1``."""
    return path.stem.rsplit("_", 1)[0]


class CarvanaDataModule(FileDataModule):
    """Carvana car segmentation, binary.

    Args:
        split_fractions: train / val / test fractions of the cars (not of the images).
        train_crop: (height, width) random crop of the resized image for training, e.g. a
            (640, 960) ``image_size`` with a (320, 480) crop; None trains on the whole image.
        **kwargs: see :class:`FileDataModule`; ``image_size`` defaults to (320, 480) here, the
            photos' 2:3 aspect ratio.
    """

    folder = "carvana"
    default_train_transforms = SCENE_TRAIN  # cars stand on their wheels: left-right flips only

    def __init__(
        self,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        train_crop: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("image_size", (320, 480))
        if train_crop is not None:
            crop = {"name": "RandomCrop", "height": train_crop[0], "width": train_crop[1]}
            kwargs["train_transforms"] = [crop, *(kwargs.get("train_transforms") or [
                {"name": "HorizontalFlip", "p": 0.5}
            ])]  # fmt: skip
        super().__init__(**kwargs)
        self.num_classes, self.class_names = 1, ["car"]
        self.split_fractions = tuple(split_fractions)

    @property
    def mask_decoder(self) -> MaskDecoder:
        return BinaryMask()

    def find_pairs(self) -> list[Pair]:
        images_dir, masks_dir = self.root / "train", self.root / "train_masks"
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise DataError(
                    folder, "folder not found (expected Kaggle's train/ and train_masks/)"
                )
        pairs = self.pair_files(
            images_dir, lambda image: masks_dir / f"{image.stem}_mask.gif", label=car_id
        )
        if not pairs:
            raise DataError(images_dir, "no Carvana images found")
        return pairs

    def split(self, pairs: list[Pair]) -> dict[str, list[Pair]]:
        return grouped_split(pairs, [p.label for p in pairs], **self.split_settings)
