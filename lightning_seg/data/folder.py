"""Any folder of images and masks, paired by file stem: the dataset to bring your own data.

::

    <root>/images/case01.jpg   <root>/masks/case01.png          (mask_suffix ".png")
    <root>/images/case01.jpg   <root>/masks/case01_mask.gif     (mask_suffix "_mask.gif")

or with the splits made already: ``<root>/train/images``, ``<root>/val/images``, ... Masks are
binary (thresholded), palette colours, grey values or class ids (``masks``); masks saved as JPEG
are snapped to the nearest class and the far pixels are reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_seg.data.files import FileDataModule, Pair
from lightning_seg.data.io import DataError
from lightning_seg.data.masks import MaskDecoder, build_mask_decoder
from lightning_seg.data.splits import random_split
from lightning_seg.errors import ConfigurationError


class FolderDataModule(FileDataModule):
    """Images and masks from folders.

    Args:
        images_dir, masks_dir: sub-folders of the root (or of each split folder).
        image_suffix: only images ending with this (e.g. ``.jpg``); "" takes every image file.
        mask_suffix: the mask of ``<stem><image ext>`` is ``<stem><mask_suffix>``.
        masks: ``binary``, or ``{type: palette, colors: [[r, g, b], ...]}``,
            ``{type: grey, values: [...]}``, ``{type: index, num_classes: N, ignore_index: K}``.
        num_classes: 1 for binary, else the number of classes.
        class_names: one per class (binary: the foreground's name).
        ignore_index: mask value (index masks) or class id to ignore.
        in_channels: 1 (grey) or 3 (RGB) input channels.
        split_fractions: train / val / test fractions when the root has no split folders.
        **kwargs: see :class:`FileDataModule`.
    """

    folder = "folder"

    def __init__(
        self,
        images_dir: str = "images",
        masks_dir: str = "masks",
        image_suffix: str = "",
        mask_suffix: str = ".png",
        masks: str | dict[str, Any] = "binary",
        num_classes: int = 1,
        class_names: list[str] | None = None,
        ignore_index: int | None = None,
        in_channels: int = 3,
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        **kwargs: Any,
    ) -> None:
        self.in_channels = in_channels  # before the base builds the preprocessing for it
        super().__init__(**kwargs)
        self.images_dir, self.masks_dir = images_dir, masks_dir
        self.image_suffix, self.mask_suffix = image_suffix.lower(), mask_suffix
        self.decoder = build_mask_decoder(masks)
        self.num_classes = num_classes
        names = class_names or (["foreground"] if num_classes == 1 else
                                [f"class_{i}" for i in range(num_classes)])  # fmt: skip
        if len(names) != max(num_classes, 1):
            raise ConfigurationError(
                f"class_names has {len(names)} names for num_classes={num_classes}"
            )
        self.class_names, self.ignore_index = list(names), ignore_index
        self.split_fractions = tuple(split_fractions)

    @property
    def mask_decoder(self) -> MaskDecoder:
        return self.decoder

    def pairs_in(self, base: Path) -> list[Pair]:
        images_dir, masks_dir = base / self.images_dir, base / self.masks_dir
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise DataError(folder, "folder not found")
        pairs = self.pair_files(
            images_dir,
            lambda image: masks_dir / f"{image.stem}{self.mask_suffix}",
            keep=lambda image: image.name.lower().endswith(self.image_suffix),
        )
        if not pairs:
            raise DataError(images_dir, "no image/mask pairs found")
        return pairs

    def find_pairs(self) -> dict[str, list[Pair]] | list[Pair]:
        if all(
            (self.root / split / self.images_dir).is_dir() for split in ("train", "val", "test")
        ):
            return {split: self.pairs_in(self.root / split) for split in ("train", "val", "test")}
        return self.pairs_in(self.root)

    def split(self, pairs: list[Pair]) -> dict[str, list[Pair]]:
        return random_split(pairs, **self.split_settings)
