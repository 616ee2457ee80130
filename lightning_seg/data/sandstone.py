"""Sandstone micro-CT slices (python_for_microscopists, MIT): 8-bit grey 1024x996 slices, 4 phases.

::

    Train_images/Sandstone_Versa0000.tif   grey slice
    Train_masks/Sandstone_Versa0000.tif    RGB colour-coded phases
    Sandstone_Versa0180_image.tif + Sandstone_Versa0180_mask.png   grey-coded variant

The two mask codings name the same four phases: (0,0,255), (255,0,0), (0,255,0), (255,255,0) in
the RGB masks and grey values 33, 65, 201, 231 in the grey one (about 48/46/4/2 % of pixels).
Slices are large and few, so they are cut into tiles of ``image_size`` rather than shrunk, and
split by slice (a slice's tiles never straddle two splits).
"""

from __future__ import annotations

from typing import Any

from lightning_seg.data.files import FileDataModule, Pair
from lightning_seg.data.io import DataError
from lightning_seg.data.masks import GreyMask, MaskDecoder, PaletteMask
from lightning_seg.data.splits import random_split

PHASE_COLOURS = [(0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 255, 0)]
PHASE_GREYS = [33, 65, 201, 231]
CLASS_NAMES = ["phase_0", "phase_1", "phase_2", "phase_3"]


class SandstoneDataModule(FileDataModule):
    """Sandstone phases, 4 classes, grey input tiled into patches.

    Args:
        split_fractions: train / val / test fractions of the slices.
        **kwargs: see :class:`FileDataModule`; ``image_size`` is the tile size (256).
    """

    folder = "sandstone"
    tiled = True
    num_classes, in_channels = 4, 1

    def __init__(
        self, split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.class_names = list(CLASS_NAMES)
        self.split_fractions = tuple(split_fractions)

    @property
    def mask_decoder(self) -> MaskDecoder:
        return PaletteMask(PHASE_COLOURS)

    def mask_decoder_for(self, pair: Pair) -> MaskDecoder:
        return GreyMask(PHASE_GREYS) if pair.mask.suffix.lower() == ".png" else self.mask_decoder

    def find_pairs(self) -> list[Pair]:
        pairs, problems = [], []
        images_dir, masks_dir = self.root / "Train_images", self.root / "Train_masks"
        if images_dir.is_dir():
            for image in sorted(images_dir.glob("*.tif")):
                mask = masks_dir / image.name
                if mask.is_file():
                    pairs.append(Pair(image, mask))
                else:
                    problems.append(DataError(image, f"no mask {mask.name} in {masks_dir}"))
        for mask in sorted(self.root.glob("*_mask.png")):
            image = mask.with_name(mask.name.replace("_mask.png", "_image.tif"))
            if image.is_file():
                pairs.append(Pair(image, mask))
            else:
                problems.append(DataError(mask, f"no image {image.name} for this grey mask"))
        self.report_problems(problems)
        if not pairs:
            raise DataError(self.root, "no sandstone slices found (Train_images/, Train_masks/)")
        return pairs

    def split(self, pairs: list[Pair]) -> dict[str, list[Pair]]:
        return random_split(pairs, **self.split_settings)
