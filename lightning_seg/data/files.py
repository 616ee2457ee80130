"""Datamodules of image and mask files on disk: pairing, seeded splits, checks with clear errors,
the decode-once cache and the Albumentations pipelines, shared by every dataset file.

A dataset file only says where its files are (:meth:`FileDataModule.find_pairs`), how its masks
are coded and how to split them; decoding and the cache live in :mod:`lightning_seg.data.cache`,
the torch datasets in :mod:`lightning_seg.data.datasets`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch.utils.data import Dataset

from lightning_seg.data import cache
from lightning_seg.data.base import SegmentationDataModule, data_dir
from lightning_seg.data.datasets import ArrayDataset, FileDataset
from lightning_seg.data.io import DataError, image_size
from lightning_seg.data.masks import MaskDecoder, MaskReport
from lightning_seg.data.pairs import Pair, pair_files
from lightning_seg.data.splits import FoldError
from lightning_seg.data.transforms import DEFAULT_TRAIN, TransformSpec, build_transform
from lightning_seg.errors import ConfigurationError
from lightning_seg.preprocessing import Interpolation, Preprocessing, default_normalization

__all__ = ["FileDataModule", "Pair"]

log = logging.getLogger(__name__)


#: Albumentations transforms that can turn an image on its side (H x W -> W x H).
AXIS_SWAPPING = frozenset({"RandomRotate90", "Transpose", "D4", "SquareSymmetry"})


def check_train_splits(train_splits: Sequence[str]) -> tuple[str, ...]:
    """``train_splits`` as a tuple: train first, optionally val; never test (held out)."""
    splits = tuple(dict.fromkeys(train_splits))
    if "train" not in splits or not set(splits) <= {"train", "val"}:
        raise ConfigurationError(
            f"data.train_splits: expected [train] or [train, val], got {list(train_splits)} "
            "(test is held out for scoring the final model)"
        )
    return splits


def joined(arrays: list[np.ndarray]) -> np.ndarray:
    """One array of the samples of several splits (a single split stays memory-mapped)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate([np.asarray(a) for a in arrays])


class FileDataModule(SegmentationDataModule):
    """A dataset of image and mask files on disk.

    Args:
        root: dataset folder; default ``$LIGHTNING_SEG_DATA/<folder>`` (``./data/<folder>``).
        image_size: (height, width) or one side that images are resized to once, when cached;
            with ``tile: true`` the size of the tiles that large images are cut into instead.
        batch_size, num_workers: DataLoader settings.
        train_transforms, val_transforms, test_transforms: Albumentations pipelines (lists of
            ``{name: Transform, ...args}``); None uses the dataset's defaults, ``[]`` none.
        cache: decode every file once into memory-mapped arrays (``$LIGHTNING_SEG_CACHE`` or
            ``~/.cache/lightning_seg``); False decodes on every access (slow; for comparison).
        skip_invalid: skip unreadable or inconsistent pairs with a warning listing them,
            instead of stopping at the first with an error.
        seed: seed of the split (independent of the training seed).
        fold: which fold of k-fold cross-validation to train and test (0 is the plain split;
            k = how many whole test splits the data holds, 4 for a 25 % test split): folds
            0 .. k-1 test every image once.
        val_fold: which block of the fold's train + val images validates (nested
            cross-validation: 0 is the plain split, 0-2 for 50/25/25); the test split stays
            put, so recipes can be compared on every non-test image without it choosing.
        mean, std: per-channel normalisation of pixels in [0, 1]; None: the dataset's default
            (ImageNet's for RGB), or what a pretrained encoder was trained with (timm's
            pretrained config, e.g. 0.5 / 0.5 for EfficientNet-Lite).
        weight_map: ``{w0, sigma}``: add the U-Net boundary weight map of each mask as ``weight``.
        interpolation: how images are resized (``auto``: area when shrinking, else bilinear).
        train_splits: the splits training draws from. ``[train, val]`` refits a recipe chosen on
            val on both, for a final model with more data; its val metrics are then no longer
            held out (the test split never joins: it is what the final model is scored on).
    """

    folder: ClassVar[str] = ""
    tiled: ClassVar[bool] = False  # True: cut full-resolution tiles of image_size, never resize
    default_train_transforms: ClassVar[TransformSpec] = DEFAULT_TRAIN

    def __init__(
        self,
        root: str | None = None,
        image_size: int | tuple[int, int] = 256,
        batch_size: int = 8,
        num_workers: int = 2,
        train_transforms: TransformSpec | None = None,
        val_transforms: TransformSpec | None = None,
        test_transforms: TransformSpec | None = None,
        cache: bool = True,
        skip_invalid: bool = False,
        seed: int = 0,
        fold: int = 0,
        val_fold: int = 0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        weight_map: dict[str, float] | None = None,
        interpolation: Interpolation = "auto",
        train_splits: Sequence[str] = ("train",),
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, weight_map=weight_map)
        self.train_splits = check_train_splits(train_splits)
        if (mean is None) != (std is None):
            raise ConfigurationError("data: set both mean and std, or neither")
        self.root = Path(root) if root else data_dir() / self.folder
        default_mean, default_std = default_normalization(self.in_channels)
        try:
            self.preprocessing = Preprocessing(
                image_size=image_size,  # type: ignore[arg-type]
                tiled=self.tiled,
                interpolation=interpolation,
                mean=default_mean if mean is None else tuple(mean),
                std=default_std if std is None else tuple(std),
                channels=self.in_channels,
            )
        except ConfigurationError as error:
            raise ConfigurationError(f"data.{error}") from None
        self.explicit_normalization = mean is not None
        self.transform_specs = {
            "train": self.default_train() if train_transforms is None else train_transforms,
            "val": val_transforms or [],
            "test": test_transforms or [],
        }
        for split, spec in self.transform_specs.items():
            build_transform(spec)  # fail at configuration time, not in a worker
            self.check_batchable(split, spec)
        self.cache = cache
        self.skip_invalid = skip_invalid
        self.seed, self.fold, self.val_fold = seed, fold, val_fold
        self._splits: dict[str, list[Pair]] | None = None
        self.skipped: list[str] = []

    # ------------------------------------------------------------------ what subclasses provide
    def default_train(self) -> TransformSpec:
        """The dataset's default augmentation; right-angle rotations only for square images,
        since they would swap height and width in a batch of rectangles."""
        height, width = self.preprocessing.image_size
        square = height == width
        return [t for t in self.default_train_transforms
                if square or t["name"] not in AXIS_SWAPPING]  # fmt: skip

    def check_batchable(self, split: str, spec: TransformSpec) -> None:
        """A transform that can swap height and width turns some samples of a non-square size
        on their side, and the batch then fails to stack, inside a worker, mid-epoch.

        The size is followed through crops and resizes, so a square crop may be rotated."""
        height, width = self.preprocessing.image_size
        for item in spec:
            if "height" in item and "width" in item:
                height, width = item["height"], item["width"]
            elif isinstance(item.get("size"), (list, tuple)) and len(item["size"]) == 2:
                height, width = item["size"]
            if item.get("name") in AXIS_SWAPPING and height != width:
                raise ConfigurationError(
                    f"data.{split}_transforms: {item['name']} can swap height and width, so a "
                    f"batch of {height} x {width} images would not stack; use a square size "
                    f"or drop {item['name']}"
                )

    @property
    def mask_decoder(self) -> MaskDecoder:
        raise NotImplementedError

    def mask_decoder_for(self, pair: Pair) -> MaskDecoder:
        """How to read this pair's mask (one decoder for all, unless a dataset mixes codings)."""
        return self.mask_decoder

    def find_pairs(self) -> dict[str, list[Pair]] | list[Pair]:
        """All pairs, as a list (split by :meth:`split`) or already split (CamVid)."""
        raise NotImplementedError

    def split(self, pairs: list[Pair]) -> dict[str, list[Pair]]:
        """Split a list of pairs into train / val / test."""
        raise NotImplementedError

    @property
    def split_settings(self) -> dict[str, Any]:
        """The keyword arguments every seeded split function takes (``splits.random_split`` and
        its stratified and grouped kin), so a new split setting is passed in one place."""
        return {
            "fractions": self.split_fractions,
            "seed": self.seed,
            "fold": self.fold,
            "val_fold": self.val_fold,
        }

    def download(self) -> None:
        """Fetch the data when it is absent and a URL is configured (datasets that can)."""

    # ------------------------------------------------------------------ splits and checks
    def report_problems(self, problems: list[DataError]) -> None:
        """Stop at invalid files with a clear error, or, with ``skip_invalid``, warn and go on."""
        if not problems:
            return
        if not self.skip_invalid:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise DataError(
                problems[0].path, f"{problems[0].problem}{more}; skip_invalid: true skips them"
            )
        lines = [str(problem) for problem in problems]
        self.skipped.extend(lines)
        log.warning("%s: skipped %d file(s):\n  %s", self.name, len(lines), "\n  ".join(lines))

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise ConfigurationError(
                f"{self.name} data not found at {self.root}: set data.init_args.root, or "
                f"LIGHTNING_SEG_DATA to the folder that holds '{self.folder}'"
            )

    def pair_files(
        self,
        images_dir: Path,
        mask_for: Callable[[Path], Path],
        label: Callable[[Path], str] = lambda image: "",
        keep: Callable[[Path], bool] = lambda image: True,
    ) -> list[Pair]:
        """Pair every image of a folder with its mask (``mask_for``); stray non-image files and
        images without a mask are problems, which :meth:`report_problems` raises or skips."""
        pairs, problems = pair_files(images_dir, mask_for, label, keep)
        self.report_problems(problems)
        return pairs

    def splits(self) -> dict[str, list[Pair]]:
        """The pairs of every split, found and split once (deterministic for the seed)."""
        if self._splits is None:
            self.check_root()
            found = self.find_pairs()
            if isinstance(found, dict) and (self.fold or self.val_fold):
                setting = "fold" if self.fold else "val_fold"
                raise ConfigurationError(
                    f"data.{setting}: {self.name} comes split into train / val / test folders "
                    f"under {self.root}, so it has no folds; use 0"
                )
            try:
                splits = found if isinstance(found, dict) else self.split(sorted(found))
            except FoldError as error:
                raise ConfigurationError(f"data.{error.setting}: {self.name}: {error}") from None
            empty = [name for name in ("train", "val", "test") if not splits.get(name)]
            if empty:
                raise ConfigurationError(
                    f"{self.name}: no image/mask pairs for split(s) {empty} under {self.root}"
                )
            self._splits = splits
        return self._splits

    # ------------------------------------------------------------------ decoding and cache
    def split_source(self, split: str) -> cache.SplitSource:
        """What the split's arrays are made of: its pairs, their mask coding, the preprocessing."""
        return cache.SplitSource(
            self.name, split, self.splits()[split], self.preprocessing, self.mask_decoder_for,
            self.skip_invalid,
        )  # fmt: skip

    def decode_pair(self, pair: Pair) -> tuple[np.ndarray, np.ndarray, MaskReport]:
        """Decode and check one pair: readable files, same size, expected mask values."""
        return cache.decode_pair(pair, self.in_channels, self.mask_decoder_for(pair))

    def decoded(self, split: str) -> cache.DecodedArrays:
        """The split's decoded arrays, from the cache (built on first use)."""
        return cache.decoded(self.split_source(split), self.report_problems)

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        # Runs once per node, before setup on every process: download and decode here.
        self.download()
        if self.cache:
            for split in ("train", "val", "test"):
                self.decoded(split)

    def build_dataset(self, split: str) -> Dataset:
        """The split's dataset; ``train`` joins every split in ``train_splits``, each sample
        augmented with the training transforms."""
        sources = self.sources_of(split)
        transform = build_transform(self.transform_specs[split])
        weight_of = self.weight_map_of if self.weight_map else None
        if not self.cache:
            parts = [self.split_source(name) for name in sources]
            return FileDataset(
                [pair for part in parts for pair in part.pairs],
                lambda pair: parts[0].decode(pair)[:2], self.preprocessing,
                transform, weight_of, parts[0].piece_names,
            )  # fmt: skip
        arrays = [self.decoded(name) for name in sources]
        weights = None
        if self.weight_map:
            key = "w0={w0}-sigma={sigma}".format(**self.weight_map)
            weights = joined(
                [
                    cache.weight_maps(
                        Path(os.path.dirname(part.images.filename)),  # type: ignore[attr-defined]
                        part.masks, self.weight_map_of, key,
                    )
                    for part in arrays
                ]
            )  # fmt: skip
        images = joined([part.images for part in arrays])
        masks = joined([part.masks for part in arrays])
        return ArrayDataset(images, masks, weights, transform, self.preprocessing)

    def sample_sources(self, split: str) -> list[str]:
        """Each sample's image file, in dataset order; a tile adds ``#top,left``."""
        dataset = self.datasets.get(split)
        if isinstance(dataset, FileDataset):  # no cache: the dataset names its samples
            return list(dataset.sources)
        return [s for name in self.sources_of(split) for s in self.decoded(name).sources]

    def sample_names(self, split: str) -> list[str]:
        """Each sample's image file relative to the data folder, in dataset order
        (``PH2Dataset/PH2 Dataset images/IMD015/IMD015_Dermoscopic_Image/IMD015.png``); a tile
        adds ``#top,left``, cached or not, so evaluations of either compare image by image."""
        return [self.relative_name(source) for source in self.sample_sources(split)]

    def sample_sizes(self, split: str) -> list[tuple[int, int] | None]:
        """(height, width) of the image file each resized sample came from, read from the
        headers; None for tiles, which the network sees at their own resolution."""
        sources = self.sample_sources(split)
        if self.preprocessing.tiled:
            return [None] * len(sources)
        return [image_size(source) for source in sources]

    def relative_name(self, source: str) -> str:
        """``source`` relative to the data folder, when it lies inside it."""
        for base in (self.root, self.root.resolve()):
            try:
                return Path(source).relative_to(base).as_posix()
            except ValueError:
                continue
        return source

    def sources_of(self, split: str) -> tuple[str, ...]:
        """The splits a dataset is made of: ``train`` joins every split in ``train_splits``."""
        return self.train_splits if split == "train" else (split,)

    def class_frequencies(self) -> np.ndarray:
        """Median-frequency statistics of the training masks (Eigen and Fergus, as SegNet uses):
        per class, its pixels divided by the pixels of the images in which it appears."""
        masks = self.decoded("train").masks
        pixels = np.zeros(self.num_classes, np.float64)
        present = np.zeros(self.num_classes, np.float64)
        for mask in masks:
            counts = np.bincount(np.asarray(mask).ravel(), minlength=256)[: self.num_classes]
            valid = (
                counts.sum()
                if self.ignore_index is None
                else mask.size - np.sum(np.asarray(mask) == self.ignore_index)
            )
            pixels += counts
            present += (counts > 0) * valid
        return pixels / np.maximum(present, 1)

    @property  # type: ignore[override]
    def class_weights(self) -> list[float] | None:
        """SegNet's median-frequency weights for multiclass data, computed once on first use
        (it decodes the training split, building its cache); None for binary data."""
        if self.num_classes < 2:
            return None
        if getattr(self, "_class_weights", None) is None:
            self._class_weights = self.median_frequency_weights()
        return self._class_weights

    def median_frequency_weights(self) -> list[float]:
        """Class weights ``median(freq) / freq(c)`` that balance rare classes (0 if absent)."""
        freq = self.class_frequencies()
        seen = freq > 0
        weights = np.zeros_like(freq)
        weights[seen] = np.median(freq[seen]) / freq[seen]
        return weights.round(4).tolist()

    def fingerprint(self) -> str:
        splits = self.splits()
        files = [
            path for split in splits.values() for pair in split for path in (pair.image, pair.mask)
        ]
        return cache.fingerprint(files, self.preprocessing.array_key())
