"""Torch datasets and the training sampler: decoded arrays to augmented, normalised samples.

Augmentation is seeded by (seed, epoch, index) alone, never by which worker draws a sample or
when, so a run killed and resumed sees the same batches as one that ran straight through.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lightning_seg.data.pairs import Pair
from lightning_seg.data.transforms import to_tensors
from lightning_seg.preprocessing import Preprocessing

PERMUTATION = 2**31 - 1  # the "index" whose seed draws an epoch's order (never a sample's)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample of one epoch, well mixed (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence([seed % 2**63, epoch, index]).generate_state(1)[0])


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
        preprocessing: Preprocessing | None = None,
    ) -> None:
        self.images, self.masks, self.weights = images, masks, weights
        self.transform = transform
        self.preprocessing = preprocessing or Preprocessing()
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

    def seed_transform(self, seed: int | None) -> None:
        if seed is not None:
            # The augmentation of a sample depends on (seed, epoch, index) alone: a resumed run
            # augments as the original did.
            self.transform.set_random_seed(seed)
        elif self._seeded_pid != os.getpid():
            # Albumentations has its own generator: seed it per worker from torch's seed,
            # which Lightning's seed_everything(workers=True) makes reproducible.
            self.transform.set_random_seed(torch.initial_seed() % 2**32)
            self._seeded_pid = os.getpid()

    def sample(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        weight: np.ndarray | None,
        seed: int | None,
        index: int,
    ) -> dict[str, torch.Tensor]:
        """Augment (seeded) and normalise one decoded sample; ``index`` names it in the
        batch, so per-image scores know their image (``sample_names`` of the datamodule)."""
        if self.transform is not None:
            self.seed_transform(seed)
            targets = {"image": image, "mask": mask}
            if weight is not None:
                targets["weight"] = weight
            out = self.transform(**targets)
            image, mask, weight = out["image"], out["mask"], out.get("weight")
        return {**to_tensors(image, mask, self.preprocessing, weight), "index": torch.tensor(index)}

    def __getitem__(self, index: int | tuple[int, int, int]) -> dict[str, torch.Tensor]:
        seed = None
        if isinstance(index, tuple):  # (seed, epoch, index) from EpochSampler
            seed, index = sample_seed(*index), index[2]
        weight = None if self.weights is None else np.asarray(self.weights[index])
        return self.sample(
            np.asarray(self.images[index]), np.asarray(self.masks[index]), weight, seed, index
        )


class FileDataset(ArrayDataset):
    """Decodes its files on every access: the slow path, kept to measure what the cache saves."""

    def __init__(
        self,
        pairs: list[Pair],
        decode: Callable[[Pair], tuple[np.ndarray, np.ndarray]],
        preprocessing: Preprocessing,
        transform: Any = None,
        weight_of: Callable[[np.ndarray], np.ndarray] | None = None,
        piece_names: Callable[[Pair], list[str]] = lambda pair: [""],
    ) -> None:
        super().__init__(np.empty(0), np.empty(0), None, transform, preprocessing)
        self.decode, self.weight_of = decode, weight_of
        named = [(pair, i, name) for pair in pairs for i, name in enumerate(piece_names(pair))]
        self.pieces = [(pair, i) for pair, i, _ in named]
        #: Each sample's source, as the cache names it: the image file, ``#top,left`` for a tile.
        self.sources = [f"{pair.image}{name}" for pair, _, name in named]

    def __len__(self) -> int:
        return len(self.pieces)

    def __getitem__(self, index: int | tuple[int, int, int]) -> dict[str, torch.Tensor]:
        seed = None
        if isinstance(index, tuple):  # (seed, epoch, index): seed the augmentation with it
            seed, index = sample_seed(*index), index[2]
        pair, piece = self.pieces[index]
        image, mask, _ = list(self.preprocessing.pieces(*self.decode(pair)))[piece]
        weight = self.weight_of(mask) if self.weight_of is not None else None
        return self.sample(image, mask, weight, seed, index)


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
