"""The shared base of every datamodule: splits to datasets, datasets to loaders.

A subclass says how to build the dataset of a split (:meth:`build_dataset`) and what the task looks
like (``num_classes``, ``class_names``, ``ignore_index``, ``in_channels``); the CLI links those
attributes into the task, so a dataset and its model can never disagree on the number of classes.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lightning_seg.losses.boundary import unet_weight_map

STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("predict",),
}


class WithWeightMap(Dataset):
    """Adds the U-Net boundary weight map of each sample's mask as ``weight``.

    The map needs distance transforms, so it is computed once per sample and kept: every later
    epoch reuses it instead of paying for it in each training step.
    """

    def __init__(
        self, dataset: Dataset, ignore_index: int | None, w0: float = 10.0, sigma: float = 5.0
    ) -> None:
        self.dataset = dataset
        self.ignore_index = ignore_index
        self.w0, self.sigma = w0, sigma
        self.cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = dict(self.dataset[index])
        if index not in self.cache:
            mask = sample["mask"].numpy()
            weight = unet_weight_map(mask, self.w0, self.sigma, self.ignore_index)
            self.cache[index] = torch.from_numpy(weight)
        sample["weight"] = self.cache[index]
        return sample


class SegmentationDataModule(LightningDataModule):
    """Base datamodule; batches are dicts of ``image`` (N x C x H x W) and ``mask`` (N x H x W)."""

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        num_classes: int,
        class_names: list[str],
        in_channels: int = 3,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_classes = num_classes
        self.class_names = list(class_names)
        self.in_channels = in_channels
        self.ignore_index = ignore_index
        # Set by the CLI from the loss (``task.weight_map_spec``): {"w0": ..., "sigma": ...}.
        self.weight_map: dict[str, float] | None = None
        self.datasets: dict[str, Dataset] = {}

    @property
    def name(self) -> str:
        """Short dataset name used for W&B groups: ``SyntheticDataModule`` -> ``synthetic``."""
        return type(self).__name__.removesuffix("DataModule").lower()

    def build_dataset(self, split: str) -> Dataset:
        """Return the dataset of ``split`` (train, val, test or predict)."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        for split in STAGE_SPLITS[stage]:
            if split not in self.datasets:
                dataset = self.build_dataset(split)
                if self.weight_map and split != "predict":
                    dataset = WithWeightMap(dataset, self.ignore_index, **self.weight_map)
                self.datasets[split] = dataset

    def _loader(self, split: str, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        # drop_last keeps BatchNorm away from a final batch of one sample.
        train = self.datasets["train"]
        return self._loader("train", shuffle=True, drop_last=len(train) > self.batch_size)  # type: ignore[arg-type]

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict")

    def describe(self) -> dict[str, Any]:
        """Facts about the data that runs record (W&B config, summaries)."""
        return {
            "dataset": self.name,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "ignore_index": self.ignore_index,
        }
