"""PH2 (Mendonca et al., EMBC 2013): 200 dermoscopic images with lesion masks, 761x570 to 769x577.

The official layout, as the archive extracts::

    PH2Dataset/
      PH2_dataset.txt      clinical diagnosis: 0 common nevus, 1 atypical nevus, 2 melanoma
      PH2 Dataset images/IMD002/
        IMD002_Dermoscopic_Image/IMD002.bmp   24-bit BMP (PNG re-encodings are read too)
        IMD002_lesion/IMD002_lesion.bmp       1-bit BMP, or RGB 0/255 (IMD002 is)

Splits are stratified by clinical diagnosis and derived from the seed (50 / 25 / 25 % by default;
the source notebooks used 100 / 50 / 50 of 200). Free for research use; cite the paper above.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from lightning_seg.data.download import prepare_dataset
from lightning_seg.data.files import FileDataModule, Pair
from lightning_seg.data.io import DataError
from lightning_seg.data.masks import BinaryMask, MaskDecoder
from lightning_seg.data.splits import stratified_split

log = logging.getLogger(__name__)

SUFFIXES = (".bmp", ".png")


def read_diagnoses(path: Path) -> dict[str, str]:
    """Image name -> clinical diagnosis, from ``PH2_dataset.txt`` (tab-separated, or the
    original archive's ``||``-separated table)."""
    if not path.is_file():
        return {}
    rows = [
        [cell.strip() for cell in re.split(r"\|\||\t", line)]
        for line in path.read_text(errors="replace").splitlines()
        if line.strip()
    ]
    header = next((row for row in rows if "Name" in row), None)
    if header is None or "Clinical Diagnosis" not in header:
        return {}
    name_col, diag_col = header.index("Name"), header.index("Clinical Diagnosis")
    return {
        row[name_col]: row[diag_col]
        for row in rows
        if len(row) > max(name_col, diag_col) and row[name_col].startswith("IMD")
    }


def first_existing(folder: Path, stem: str) -> Path | None:
    return next(
        (folder / f"{stem}{s}" for s in SUFFIXES if (folder / f"{stem}{s}").is_file()), None
    )


class PH2DataModule(FileDataModule):
    """PH2 skin lesions, binary (lesion vs skin).

    Args:
        split_fractions: train / val / test fractions, stratified by clinical diagnosis.
        url: where ``prepare_data`` downloads the official archive from when the data is absent
            (zip, tar or RAR; a RAR needs an extractor such as unrar, 7z or bsdtar).
        checksum: ``sha256:<hex>`` or ``md5:<hex>`` of that archive.
        **kwargs: see :class:`FileDataModule` (root, image_size, transforms, cache, ...).
    """

    folder = "ph2"

    def __init__(
        self,
        split_fractions: tuple[float, float, float] = (0.5, 0.25, 0.25),
        url: str | None = None,
        checksum: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.class_names = 1, ["lesion"]
        self.split_fractions = tuple(split_fractions)
        self.url, self.checksum = url, checksum

    @property
    def dataset_dir(self) -> Path:
        """The ``PH2Dataset`` folder: inside the root, or the root itself."""
        nested = self.root / "PH2Dataset"
        return nested if nested.is_dir() else self.root

    @property
    def mask_decoder(self) -> MaskDecoder:
        return BinaryMask()

    def download(self) -> None:
        marker = "PH2Dataset/PH2 Dataset images"
        if (self.root / marker).is_dir() or (self.root / "PH2 Dataset images").is_dir():
            return
        prepare_dataset(self.root, self.url, self.checksum, marker=marker)

    def find_pairs(self) -> list[Pair]:
        images_dir = self.dataset_dir / "PH2 Dataset images"
        if not images_dir.is_dir():
            raise DataError(images_dir, "PH2 image folder not found (expected the official layout)")
        table = self.dataset_dir / "PH2_dataset.txt"
        diagnoses = read_diagnoses(table)
        if not diagnoses:
            log.warning(
                "%s: no clinical diagnoses (missing or unreadable); the split is not "
                "stratified by diagnosis",
                table,
            )
        pairs, problems = [], []
        for case in sorted(p for p in images_dir.iterdir() if p.is_dir()):
            name = case.name
            image = first_existing(case / f"{name}_Dermoscopic_Image", name)
            mask = first_existing(case / f"{name}_lesion", f"{name}_lesion")
            if image is None or mask is None:
                missing = "image" if image is None else "lesion mask"
                problems.append(DataError(case, f"no {missing} ({'/'.join(SUFFIXES)}) in {name}"))
                continue
            pairs.append(Pair(image, mask, diagnoses.get(name, "unknown")))
        self.report_problems(problems)
        if not pairs:
            raise DataError(images_dir, "no PH2 image/mask pairs found")
        return pairs

    def split(self, pairs: list[Pair]) -> dict[str, list[Pair]]:
        return stratified_split(pairs, [p.label for p in pairs], **self.split_settings)
