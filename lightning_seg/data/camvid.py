"""CamVid (Brostow et al., 2009) in the SegNet layout: street scenes at 480x360, 11 classes.

::

    train/ trainannot/ val/ valannot/ test/ testannot/    RGB PNG frames / class-id PNG masks

Masks hold class ids 0-10; 11 marks unlabelled (void) pixels, which every loss and metric
ignores. The splits are the dataset's own. CC BY-NC 4.0, research use.
"""

from __future__ import annotations

from typing import Any

from lightning_seg.data.files import FileDataModule, Pair
from lightning_seg.data.io import DataError
from lightning_seg.data.masks import IndexMask, MaskDecoder
from lightning_seg.data.transforms import SCENE_TRAIN

CLASS_NAMES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]  # fmt: skip
VOID = 11


class CamVidDataModule(FileDataModule):
    """CamVid, 11 classes plus void (ignored).

    ``median_frequency_weights()`` gives SegNet's class balancing weights for ``ce``; the loss
    spec ``{name: ce, class_weights: median_frequency}`` asks for them.

    Args:
        **kwargs: see :class:`FileDataModule`; ``image_size`` defaults to (352, 480) (360 rounded
            down to a multiple of 32, so every network's stride divides it).
    """

    folder = "camvid"
    default_train_transforms = SCENE_TRAIN

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("image_size", (352, 480))
        super().__init__(**kwargs)
        self.num_classes, self.class_names, self.ignore_index = 11, list(CLASS_NAMES), VOID

    @property
    def mask_decoder(self) -> MaskDecoder:
        return IndexMask(num_classes=11, ignore_index=VOID)

    def find_pairs(self) -> dict[str, list[Pair]]:
        splits = {}
        for split in ("train", "val", "test"):
            images_dir, masks_dir = self.root / split, self.root / f"{split}annot"
            if not images_dir.is_dir() or not masks_dir.is_dir():
                raise DataError(
                    images_dir, f"CamVid split folders {split}/ and {split}annot/ expected"
                )
            pairs = self.pair_files(images_dir, lambda image, d=masks_dir: d / image.name)
            splits[split] = pairs
        return splits
