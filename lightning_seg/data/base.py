"""The shared base of every datamodule: files to pairs, pairs to splits, splits to cached arrays,
arrays to augmented batches.

``SegmentationDataModule`` is what the task sees: batches of ``image`` (N x C x H x W float),
``mask`` (N x H x W int64 class ids) and, when the loss needs it, ``weight`` (N x H x W), plus the
attributes the CLI links into the task (``num_classes``, ``class_names``, ``ignore_index``,
``in_channels``). ``FileDataModule`` adds what every dataset on disk shares: the default root
``<data dir>/<folder>``, pairing, seeded splits, checks with clear errors, the decode-once cache and
the Albumentations pipelines. A dataset file only says where its files are and how to split them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_seg.data import cache
from lightning_seg.data.io import DataError, image_size, is_image_file, read_image
from lightning_seg.data.masks import MaskDecoder, MaskReport, read_mask, summarize_reports
from lightning_seg.data.transforms import (
    DEFAULT_TRAIN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TransformSpec,
    build_transform,
    to_tensors,
)
from lightning_seg.data.weight_maps import check_weight_map_spec, unet_weight_map
from lightning_seg.errors import ConfigurationError

log = logging.getLogger(__name__)

STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}


def data_dir() -> Path:
    """Where datasets live by default: ``$LIGHTNING_SEG_DATA``, else ``./data``."""
    return Path(os.environ.get("LIGHTNING_SEG_DATA", "data"))


@dataclass(frozen=True, order=True)
class Pair:
    """An image and its mask; ``label`` is what splits stratify or group by (diagnosis, car)."""

    image: Path
    mask: Path
    label: str = ""

    def __str__(self) -> str:
        return str(self.image)


class ArrayDataset(Dataset):
    """Samples from decoded arrays (memory-mapped cache or in memory), augmented on the fly.

    Memory-mapped arrays travel to worker processes as file references, never as copies.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        weights: np.ndarray | None = None,
        transform: Any = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        self.images, self.masks, self.weights = images, masks, weights
        self.transform = transform
        self.mean, self.std = mean, std
        self._seeded_pid = -1

    def __len__(self) -> int:
        return len(self.masks)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("images", "masks", "weights"):
            array = state[key]
            filename = getattr(array, "filename", None)
            if filename is not None:
                state[key] = ("npy", filename, len(array))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key in ("images", "masks", "weights"):
            value = state[key]
            if isinstance(value, tuple) and value[:1] == ("npy",):
                state[key] = np.load(value[1], mmap_mode="r")[: value[2]]
        self.__dict__.update(state)

    def __getitem__(self, index: int | tuple[int, int, int]) -> dict[str, torch.Tensor]:
        seed = None
        if isinstance(index, tuple):  # (seed, epoch, index) from EpochSampler
            seed = sample_seed(*index)
            index = index[2]
        image = np.asarray(self.images[index])
        mask = np.asarray(self.masks[index])
        weight = None if self.weights is None else np.asarray(self.weights[index])
        if self.transform is not None:
            if seed is not None:
                # The augmentation of a sample depends on (seed, epoch, index) alone, not on
                # which worker draws it or when: a resumed run augments as the original did.
                self.transform.set_random_seed(seed)
            elif self._seeded_pid != os.getpid():
                # Albumentations has its own generator: seed it per worker from torch's seed,
                # which Lightning's seed_everything(workers=True) makes reproducible.
                self.transform.set_random_seed(torch.initial_seed() % 2**32)
                self._seeded_pid = os.getpid()
            targets = {"image": image, "mask": mask}
            if weight is not None:
                targets["weight"] = weight
            out = self.transform(**targets)
            image, mask, weight = out["image"], out["mask"], out.get("weight")
        return to_tensors(image, mask, self.mean, self.std, weight)


PERMUTATION = 2**31 - 1  # the "index" whose seed draws an epoch's order (never a sample's)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample of one epoch, well mixed (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence([seed % 2**63, epoch, index]).generate_state(1)[0])


class EpochSampler(Sampler):
    """Shuffles the training set with a permutation of (seed, epoch) only, and hands each index
    to the dataset as ``(seed, epoch, index)`` so that augmentation is seeded the same way.

    Lightning calls :meth:`set_epoch` at the start of every epoch, also after resuming from a
    checkpoint, so a run killed and resumed sees the same batches and augmentations as one that
    ran straight through (the global RNG state at resume time plays no part).
    """

    def __init__(self, size: int, seed: int, epoch_of: Callable[[], int] | None = None) -> None:
        self.size, self.seed, self.epoch = size, seed, 0
        self.epoch_of = epoch_of

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        # Lightning creates a resumed run's first iterator (and worker processes prefetch from
        # it) before it calls set_epoch, so the epoch is read from the trainer when it can be.
        epoch = self.epoch_of() if self.epoch_of is not None else self.epoch
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, PERMUTATION))
        for index in torch.randperm(self.size, generator=generator).tolist():
            yield (self.seed, epoch, index)


class SegmentationDataModule(LightningDataModule):
    """Base datamodule; batches are dicts of ``image`` (N x C x H x W) and ``mask`` (N x H x W).

    Subclasses set ``num_classes`` (1 = binary), ``class_names``, ``in_channels`` and
    ``ignore_index`` and implement :meth:`build_dataset`.
    """

    num_classes: int = 1
    class_names: list[str] = ["foreground"]
    in_channels: int = 3
    ignore_index: int | None = None

    def __init__(
        self, batch_size: int = 8, num_workers: int = 0, weight_map: dict[str, float] | None = None
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigurationError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigurationError(f"data.num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        # {"w0": ..., "sigma": ...}: add the U-Net boundary weight map of each mask to its
        # batch as ``weight`` (the boundary losses need it).
        self.weight_map = check_weight_map_spec(weight_map)
        self.datasets: dict[str, Dataset] = {}

    @property
    def name(self) -> str:
        """Short dataset name used for W&B groups: ``SyntheticDataModule`` -> ``synthetic``."""
        return type(self).__name__.removesuffix("DataModule").lower()

    def build_dataset(self, split: str) -> Dataset:
        """Return the dataset of ``split`` (train, val or test)."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        # seed_everything's seed, taken before training reseeds torch per epoch: the shuffle
        # and augmentation seed of this run, the same when it is resumed.
        self.shuffle_seed = getattr(self, "shuffle_seed", None) or torch.initial_seed()
        for split in STAGE_SPLITS[stage]:
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)

    def use_encoder_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Feed a pretrained encoder the statistics it was trained with (EfficientNet-Lite:
        0.5 / 0.5), unless the experiment set ``mean`` and ``std`` itself or the channels differ."""
        if getattr(self, "explicit_normalization", False) or len(mean) != self.in_channels:
            return
        self.mean, self.std = tuple(mean), tuple(std)

    def weight_map_of(self, mask: np.ndarray) -> np.ndarray:
        """The U-Net boundary weight map of ``mask`` (the ``weight_map`` option)."""
        assert self.weight_map is not None
        return unet_weight_map(mask, ignore_index=self.ignore_index, **self.weight_map)

    def _loader(self, split: str, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        dataset = self.datasets[split]
        # The training order and augmentation follow seed_everything's seed and the epoch.
        seed = getattr(self, "shuffle_seed", None) or torch.initial_seed()
        sampler = (
            EpochSampler(len(dataset), seed, self.training_epoch)  # type: ignore[arg-type]
            if shuffle
            else None
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the epoch that training goes on with after a resume."""
        trainer = getattr(self, "trainer", None)
        loop = getattr(trainer, "fit_loop", None)
        return {"next_epoch": int(loop.epoch_progress.current.processed) if loop else 0}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resume_epoch = state_dict.get("next_epoch")

    def training_epoch(self) -> int:
        """The epoch the trainer is about to train (its restored progress, when resuming)."""
        trainer = getattr(self, "trainer", None)
        loop = getattr(trainer, "fit_loop", None)
        progress = int(loop.epoch_progress.current.processed) if loop is not None else 0
        # A resumed run's first iterator is made before the loop's progress is restored.
        return max(progress, getattr(self, "resume_epoch", None) or 0)

    def train_dataloader(self) -> DataLoader:
        # drop_last keeps BatchNorm away from a final batch of one sample.
        train = self.datasets["train"]
        return self._loader("train", shuffle=True, drop_last=len(train) > self.batch_size)  # type: ignore[arg-type]

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

    def fingerprint(self) -> str:
        """Identifies the data a run saw (W&B config), so two runs can be checked to compare
        like with like: here the generating settings; for files, the files themselves."""
        settings = {k: v for k, v in vars(self).items() if isinstance(v, int | float | str)}
        return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def inference_settings(self) -> dict[str, Any]:
        """What prediction on new images needs to prepare them as training did (stored in
        checkpoints)."""
        return {
            "mean": list(getattr(self, "mean", IMAGENET_MEAN)),
            "std": list(getattr(self, "std", IMAGENET_STD)),
            "image_size": list(getattr(self, "image_size", (256, 256))),
            "in_channels": self.in_channels,
            "class_names": list(self.class_names),
            "tiled": bool(getattr(self, "tile", False)),
        }

    def describe(self) -> dict[str, Any]:
        """Facts about the data that runs record (W&B config, summaries)."""
        return {
            "dataset": self.name,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "ignore_index": self.ignore_index,
        }


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
        mean, std: per-channel normalisation of pixels in [0, 1]; None: the dataset's default
            (ImageNet's for RGB), or what a pretrained encoder was trained with (timm's
            pretrained config, e.g. 0.5 / 0.5 for EfficientNet-Lite).
    """

    folder: ClassVar[str] = ""
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
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        weight_map: dict[str, float] | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, weight_map=weight_map)
        if (mean is None) != (std is None):
            raise ConfigurationError("data: set both mean and std, or neither")
        self.root = Path(root) if root else data_dir() / self.folder
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or min(int(side) for side in size) < 1:
            raise ConfigurationError(
                f"data.image_size must be one side or (height, width), each >= 1; got {image_size}"
            )
        self.image_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.transform_specs = {
            "train": self.default_train() if train_transforms is None else train_transforms,
            "val": val_transforms or [],
            "test": test_transforms or [],
        }
        for spec in self.transform_specs.values():
            build_transform(spec)  # fail at configuration time, not in a worker
        self.cache = cache
        self.skip_invalid = skip_invalid
        self.seed = seed
        self.tile = False
        self.mean: tuple[float, ...] = IMAGENET_MEAN
        self.std: tuple[float, ...] = IMAGENET_STD
        self.explicit_normalization = mean is not None
        if mean is not None and std is not None:
            self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        self._splits: dict[str, list[Pair]] | None = None
        self.skipped: list[str] = []

    # ------------------------------------------------------------------ what subclasses provide
    def default_train(self) -> TransformSpec:
        """The dataset's default augmentation; right-angle rotations only for square images,
        since they would swap height and width in a batch of rectangles."""
        square = self.image_size[0] == self.image_size[1]
        return [t for t in self.default_train_transforms
                if square or t["name"] != "RandomRotate90"]  # fmt: skip

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
        self.report_problems(problems)
        return pairs

    def splits(self) -> dict[str, list[Pair]]:
        """The pairs of every split, found and split once (deterministic for the seed)."""
        if self._splits is None:
            self.check_root()
            found = self.find_pairs()
            splits = found if isinstance(found, dict) else self.split(sorted(found))
            empty = [name for name in ("train", "val", "test") if not splits.get(name)]
            if empty:
                raise ConfigurationError(
                    f"{self.name}: no image/mask pairs for split(s) {empty} under {self.root}"
                )
            self._splits = splits
        return self._splits

    def decode_pair(self, pair: Pair) -> tuple[np.ndarray, np.ndarray, MaskReport]:
        """Decode and check one pair: readable files, same size, expected mask values."""
        image = read_image(pair.image, channels=self.in_channels)
        mask, report = read_mask(pair.mask, self.mask_decoder_for(pair))
        if image.shape[:2] != mask.shape:
            raise DataError(
                pair.mask,
                f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {pair.image.name} is "
                f"{image.shape[1]}x{image.shape[0]}",
            )
        return image, mask, report

    def pieces(
        self, image: np.ndarray, mask: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        """The training samples of one decoded pair: resized once, or cut into tiles."""
        height, width = self.image_size
        if not self.tile:
            if image.shape[:2] != (height, width):
                shrink = image.shape[0] * image.shape[1] > height * width
                image = cv2.resize(
                    image,
                    (width, height),
                    interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
                )
                mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
            yield image.reshape(height, width, -1), mask, ""
            return
        for top, left in tile_origins(image.shape[:2], (height, width)):
            yield (
                image[top : top + height, left : left + width].reshape(height, width, -1),
                mask[top : top + height, left : left + width],
                f"#{top},{left}",
            )

    def count_pieces(self, pair: Pair) -> int:
        if not self.tile:
            return 1
        try:
            return len(tile_origins(image_size(pair.image), self.image_size))
        except DataError:
            return 0  # decode_pair reports it

    def decoded_samples(
        self, pairs: list[Pair], reports: list[MaskReport]
    ) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        problems = []
        for pair in pairs:
            try:
                image, mask, report = self.decode_pair(pair)
            except DataError as error:
                if not self.skip_invalid:
                    raise
                problems.append(error)
                continue
            reports.append(report)
            for image_piece, mask_piece, suffix in self.pieces(image, mask):
                yield image_piece, mask_piece, f"{pair.image}{suffix}"
        self.report_problems(problems)

    # ------------------------------------------------------------------ cache
    def cache_folder(self, split: str, pairs: list[Pair]) -> Path:
        settings = {
            "dataset": self.name,
            "split": split,
            "size": self.image_size,
            "tile": self.tile,
            "channels": self.in_channels,
            "masks": sorted({repr(self.mask_decoder_for(pair)) for pair in pairs}),
            "skip_invalid": self.skip_invalid,
        }
        files = [path for pair in pairs for path in (pair.image, pair.mask)]
        key = cache.fingerprint(files, settings)
        return cache.default_cache_dir() / f"{self.name}-{split}-{key}"

    def decoded(self, split: str) -> cache.DecodedArrays:
        """The split's decoded arrays, from the cache (built on first use)."""
        pairs = self.splits()[split]
        folder = self.cache_folder(split, pairs)
        if (folder / "meta.json").exists():
            return cache.load(folder)
        reports: list[MaskReport] = []
        capacity = sum(self.count_pieces(pair) for pair in pairs)
        shape = (*self.image_size, self.in_channels)
        arrays = cache.build(
            folder, capacity, shape, self.decoded_samples(pairs, reports), {"split": split}
        )
        if note := summarize_reports(reports):
            log.warning("%s %s: %s", self.name, split, note)
        if len(arrays) == 0:
            raise ConfigurationError(f"{self.name} {split}: no valid image/mask pairs left")
        return arrays

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        # Runs once per node, before setup on every process: download and decode here.
        self.download()
        if self.cache:
            for split in ("train", "val", "test"):
                self.decoded(split)

    def build_dataset(self, split: str) -> Dataset:
        transform = build_transform(self.transform_specs[split])
        if not self.cache:
            return FileDataset(self, self.splits()[split], transform)
        arrays = self.decoded(split)
        weights = None
        if self.weight_map:
            key = "w0={w0}-sigma={sigma}".format(**self.weight_map)
            folder = Path(os.path.dirname(arrays.images.filename))  # type: ignore[attr-defined]
            weights = cache.weight_maps(folder, arrays.masks, self.weight_map_of, key)
        return ArrayDataset(arrays.images, arrays.masks, weights, transform, self.mean, self.std)

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
        return cache.fingerprint(files, {"size": self.image_size, "tile": self.tile})

    def describe(self) -> dict[str, Any]:
        splits = self.splits()
        return {
            **super().describe(),
            "root": str(self.root),
            "pairs": {name: len(pairs) for name, pairs in splits.items()},
        }


class FileDataset(Dataset):
    """Decodes its files on every access: the slow path, kept to measure what the cache saves."""

    def __init__(self, datamodule: FileDataModule, pairs: list[Pair], transform: Any) -> None:
        self.dm = datamodule
        self.pieces = [(pair, i) for pair in pairs for i in range(datamodule.count_pieces(pair))]
        self.array = ArrayDataset(
            np.empty(0), np.empty(0), None, transform, datamodule.mean, datamodule.std
        )

    def __len__(self) -> int:
        return len(self.pieces)

    def __getitem__(self, index: int | tuple[int, int, int]) -> dict[str, torch.Tensor]:
        key: int | tuple[int, int, int] = 0
        if isinstance(index, tuple):  # (seed, epoch, index): seed the augmentation with it
            key, index = (index[0], index[1], 0), index[2]
        pair, piece = self.pieces[index]
        image, mask, _ = self.dm.decode_pair(pair)
        image, mask, _ = list(self.dm.pieces(image, mask))[piece]
        weight = self.dm.weight_map_of(mask)[None] if self.dm.weight_map else None
        self.array.images, self.array.masks = image[None], mask[None]
        self.array.weights = weight
        if isinstance(key, tuple):
            key = (key[0], key[1], index)
        return self.array[key]


def tile_origins(size: tuple[int, int], tile: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of tiles covering an image; the last row and column are shifted inwards
    so that every tile lies inside the image (images smaller than a tile are an error)."""
    (height, width), (th, tw) = size, tile
    if height < th or width < tw:
        raise ConfigurationError(f"image of {width}x{height} is smaller than the {tw}x{th} tile")
    rows = sorted({*range(0, height - th + 1, th), height - th})
    cols = sorted({*range(0, width - tw + 1, tw), width - tw})
    return [(top, left) for top in rows for left in cols]
