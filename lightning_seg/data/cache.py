"""Decode once: every image and mask of a split is decoded, checked and resized a single time
into NumPy ``.npy`` files that all DataLoader workers memory-map, so the operating system's page
cache shares one copy and no epoch decodes a PNG or BMP again.

:class:`SplitSource` says what a split's arrays are made of (its pairs, how their masks are
coded, the :class:`~lightning_seg.preprocessing.Preprocessing` that shapes them);
:func:`decoded` returns them, from the cache or built on first use.

A cache folder is named by a fingerprint of the files (path, size, modification time) and of the
settings that shape the arrays (size, tiling, channels, mask decoding), so a changed file or a new
size builds a new cache and a stale one is never read. Folders are written under a temporary name
and renamed when complete: an interrupted build never leaves a cache that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lightning_seg.data.io import DataError, image_size, read_image
from lightning_seg.data.masks import MaskDecoder, MaskReport, read_mask, summarize_reports
from lightning_seg.data.pairs import Pair
from lightning_seg.errors import ConfigurationError

# Where cache folders live (shared with converted weights).
from lightning_seg.paths import default_cache_dir
from lightning_seg.preprocessing import Preprocessing

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def fingerprint(files: Iterable[Path], settings: dict[str, Any]) -> str:
    """Hash of the files' identities and of the settings that shape the decoded arrays."""
    digest = hashlib.sha1(json.dumps([CACHE_VERSION, settings], sort_keys=True).encode())
    for path in files:
        stat = Path(path).stat()
        digest.update(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class DecodedArrays:
    """Decoded samples: images N x H x W x C uint8, masks N x H x W uint8, and their sources."""

    images: np.ndarray
    masks: np.ndarray
    sources: list[str]
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.sources)


def load(folder: Path) -> DecodedArrays:
    """Memory-map a finished cache folder (read-only: workers share the pages)."""
    meta = json.loads((folder / "meta.json").read_text())
    count = meta["count"]
    images = np.load(folder / "images.npy", mmap_mode="r")[:count]
    masks = np.load(folder / "masks.npy", mmap_mode="r")[:count]
    return DecodedArrays(images, masks, meta["sources"], meta)


def build(
    folder: Path,
    capacity: int,
    shape: tuple[int, int, int],
    samples: Iterator[tuple[np.ndarray, np.ndarray, str]],
    meta: dict[str, Any],
) -> DecodedArrays:
    """Write up to ``capacity`` samples from ``samples`` into ``folder`` and memory-map them.

    ``samples`` yields (image H x W x C uint8, mask H x W uint8, source); invalid files that are
    skipped simply yield nothing, so fewer than ``capacity`` rows may be filled.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{os.getpid()}.", dir=folder.parent))
    try:
        height, width, channels = shape
        images = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8,
            shape=(max(capacity, 1), height, width, channels),
        )  # fmt: skip
        masks = np.lib.format.open_memmap(
            tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=(max(capacity, 1), height, width)
        )
        sources = []
        for index, (image, mask, source) in enumerate(samples):
            images[index] = image
            masks[index] = mask
            sources.append(source)
        images.flush()
        masks.flush()
        del images, masks
        (tmp / "meta.json").write_text(
            json.dumps({**meta, "count": len(sources), "sources": sources}, indent=1)
        )
        os.replace(tmp, folder) if not folder.exists() else shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_abandoned(folder: Path) -> None:
    """Delete half-built copies of ``folder`` left by killed runs (``.<name>.<pid>.<random>``
    whose process is gone); a build still running in another process is left alone."""
    for partial in folder.parent.glob(f".{folder.name}.*"):
        pid = partial.name[len(folder.name) + 2 :].split(".", 1)[0]
        if partial.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def weight_maps(folder: Path, masks: np.ndarray, compute: Any, key: str) -> np.ndarray:
    """The boundary weight map of every cached mask, computed once and memory-mapped."""
    path = folder / f"weights-{key}.npy"
    if not path.exists():
        fd, tmp = tempfile.mkstemp(prefix=".weights.", suffix=".npy", dir=folder)
        os.close(fd)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=masks.shape)
            for i, mask in enumerate(masks):
                out[i] = compute(np.asarray(mask))
            out.flush()
            del out
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return np.load(path, mmap_mode="r")


# ---------------------------------------------------------------------- decoding pairs
def decode_pair(
    pair: Pair, channels: int, decoder: MaskDecoder
) -> tuple[np.ndarray, np.ndarray, MaskReport]:
    """Decode and check one pair: readable files, same size, expected mask values."""
    image = read_image(pair.image, channels=channels)
    mask, report = read_mask(pair.mask, decoder)
    if image.shape[:2] != mask.shape:
        raise DataError(
            pair.mask,
            f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {pair.image.name} is "
            f"{image.shape[1]}x{image.shape[0]}",
        )
    return image, mask, report


@dataclass
class SplitSource:
    """What one split's decoded arrays are made of, and how files that fail are handled."""

    dataset: str
    split: str
    pairs: list[Pair]
    preprocessing: Preprocessing
    decoder_for: Callable[[Pair], MaskDecoder]
    skip_invalid: bool = False

    def decode(self, pair: Pair) -> tuple[np.ndarray, np.ndarray, MaskReport]:
        return decode_pair(pair, self.preprocessing.channels, self.decoder_for(pair))

    def piece_names(self, pair: Pair) -> list[str]:
        """The name suffix of each sample of one pair (``#top,left`` per tile, read from the
        image header alone; ``""`` for a resized image)."""
        if not self.preprocessing.tiled:
            return [""]
        try:
            return self.preprocessing.piece_names(image_size(pair.image))
        except DataError:
            return []  # decoding reports it

    def folder(self) -> Path:
        """The cache folder: named by the files and by every setting that shapes the arrays."""
        settings = {
            "dataset": self.dataset,
            "split": self.split,
            **self.preprocessing.array_key(),
            "masks": sorted({repr(self.decoder_for(pair)) for pair in self.pairs}),
            "skip_invalid": self.skip_invalid,
        }
        files = [path for pair in self.pairs for path in (pair.image, pair.mask)]
        key = fingerprint(files, settings)
        return default_cache_dir() / f"{self.dataset}-{self.split}-{key}"

    def samples(
        self, reports: list[MaskReport], problems: list[DataError]
    ) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        """Every sample of the split; with ``skip_invalid`` bad pairs go to ``problems``."""
        for pair in self.pairs:
            try:
                image, mask, report = self.decode(pair)
            except DataError as error:
                if not self.skip_invalid:
                    raise
                problems.append(error)
                continue
            reports.append(report)
            for image_piece, mask_piece, suffix in self.preprocessing.pieces(image, mask):
                yield image_piece, mask_piece, f"{pair.image}{suffix}"


def decoded(
    source: SplitSource, report_problems: Callable[[list[DataError]], None]
) -> DecodedArrays:
    """The split's decoded arrays, from the cache (built on first use); skipped files go to
    ``report_problems`` and JPEG-snapped mask pixels to one warning line."""
    folder = source.folder()
    if (folder / "meta.json").exists():
        return load(folder)
    reports: list[MaskReport] = []
    problems: list[DataError] = []
    capacity = sum(len(source.piece_names(pair)) for pair in source.pairs)
    shape = (*source.preprocessing.image_size, source.preprocessing.channels)
    samples = source.samples(reports, problems)
    arrays = build(folder, capacity, shape, samples, {"split": source.split})
    report_problems(problems)
    if note := summarize_reports(reports):
        log.warning("%s %s: %s", source.dataset, source.split, note)
    if len(arrays) == 0:
        raise ConfigurationError(f"{source.dataset} {source.split}: no valid image/mask pairs left")
    return arrays
