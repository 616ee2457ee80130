"""Image/mask pairs: what a dataset on disk is made of, and the pairing of a folder's files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lightning_seg.data.io import DataError, is_image_file


@dataclass(frozen=True, order=True)
class Pair:
    """An image and its mask; ``label`` is what splits stratify or group by (diagnosis, car)."""

    image: Path
    mask: Path
    label: str = ""

    def __str__(self) -> str:
        return str(self.image)


def pair_files(
    images_dir: Path,
    mask_for: Callable[[Path], Path],
    label: Callable[[Path], str] = lambda image: "",
    keep: Callable[[Path], bool] = lambda image: True,
) -> tuple[list[Pair], list[DataError]]:
    """Pair every image of a folder with its mask (``mask_for``), in name order.

    Stray non-image files and images without a mask come back as problems, for the datamodule to
    stop at or skip; an empty folder is an error at once.
    """
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and p.name[0] != ".")
    if not files:
        raise DataError(images_dir, "empty folder: no images")
    pairs, problems = [], []
    for image in files:
        if not is_image_file(image):
            problems.append(DataError(image, f"not an image file (suffix {image.suffix!r})"))
        elif keep(image):
            mask = mask_for(image)
            if mask.is_file():
                pairs.append(Pair(image, mask, label(image)))
            else:
                problems.append(DataError(image, f"no mask (expected {mask})"))
    return pairs, problems
