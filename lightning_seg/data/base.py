"""The base of every datamodule: what the task sees, and the loaders that feed it.

``SegmentationDataModule`` gives batches of ``image`` (N x C x H x W float), ``mask`` (N x H x W
int64 class ids) and, when the loss needs it, ``weight`` (N x H x W), plus the attributes the CLI
links into the task (``num_classes``, ``class_names``, ``ignore_index``, ``in_channels``,
``class_weights``) and the :class:`~lightning_seg.preprocessing.Preprocessing` that checkpoints,
``predict`` and export share. Datasets of files build on
:class:`~lightning_seg.data.files.FileDataModule`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, Strategy
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_seg.data.datasets import EpochSampler
from lightning_seg.data.weight_maps import check_weight_map_spec, unet_weight_map
from lightning_seg.errors import ConfigurationError
from lightning_seg.preprocessing import Preprocessing, default_normalization

STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}


def data_dir() -> Path:
    """Where datasets live by default: ``$LIGHTNING_SEG_DATA``, else ``./data``."""
    return Path(os.environ.get("LIGHTNING_SEG_DATA", "data"))


def forwards_alone(strategy: Strategy) -> bool:
    """Whether ``strategy``'s processes run evaluation forward passes without talking to each
    other (DDP's only collectives are in training), so their shares of a split may differ."""
    return isinstance(strategy, DDPStrategy) and not isinstance(strategy, DeepSpeedStrategy)


class SegmentationDataModule(LightningDataModule):
    """Base datamodule; batches are dicts of ``image`` (N x C x H x W) and ``mask`` (N x H x W).

    Subclasses set ``num_classes`` (1 = binary), ``class_names``, ``in_channels`` and
    ``ignore_index`` and implement :meth:`build_dataset`.
    """

    num_classes: int = 1
    class_names: list[str] = ["foreground"]
    in_channels: int = 3
    ignore_index: int | None = None
    # Median-frequency class weights of the training masks (linked into the task by the CLI);
    # None where there are none to give (binary or generated data).
    class_weights: list[float] | None = None

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
        # How pixels become network input (size, tiles, normalisation): one object that the
        # datasets, the W&B images, the checkpoint and so predict and export all use.
        mean, std = default_normalization(self.in_channels)
        self.preprocessing = Preprocessing(mean=mean, std=std, channels=self.in_channels)
        self.explicit_normalization = False

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

    def use_encoder_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Feed a pretrained encoder the statistics it was trained with (EfficientNet-Lite:
        0.5 / 0.5), unless the experiment set ``mean`` and ``std`` itself or the channels differ."""
        if not self.explicit_normalization and len(mean) == self.preprocessing.channels:
            self.preprocessing = self.preprocessing.with_normalization(mean, std)

    def use_network_stride(self, stride: int) -> None:
        """Record the multiple the network pads its input to (exports and predict read it)."""
        self.preprocessing = self.preprocessing.with_stride(stride)

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
            else self._evaluation_sampler(dataset)
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

    def _evaluation_sampler(self, dataset: Dataset) -> Sampler | None:
        """Under DDP: each process scores its own images and no image twice, so every score
        (validation inside ``fit`` too, which picks the best checkpoint) covers the split once.

        Lightning's own sampler pads the shorter shares with repeated images (41 test images on
        two processes score 42), which tilts every metric towards the repeats. DDP runs no
        collective in a forward pass without gradients, so processes may run one batch more or
        less than each other; sharded strategies (FSDP, DeepSpeed) gather the weights in every
        forward pass and keep Lightning's padded, equal shares, as does a split smaller than
        the number of processes (only the interval and per-image records de-duplicate those).
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.world_size < 2 or not forwards_alone(trainer.strategy):
            return None
        if len(dataset) < trainer.world_size:  # type: ignore[arg-type]
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
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

    def sample_names(self, split: str) -> list[str]:
        """A name for each sample of a built split, in dataset order (the ``index`` of its
        batches): how per-image scores say which image they belong to."""
        return [f"{split}-{i:04d}" for i in range(len(self.datasets[split]))]  # type: ignore[arg-type]

    def sample_sizes(self, split: str) -> list[tuple[int, int] | None]:
        """(height, width) of the image each sample was resized from, so that its mask can be
        pasted back to it; None where the sample is all there is (generated data, tiles)."""
        return [None] * len(self.datasets[split])  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        """Identifies the data a run saw (W&B config), so two runs can be checked to compare
        like with like: here the generating settings; for files, the files themselves."""
        settings = {k: v for k, v in vars(self).items() if isinstance(v, int | float | str)}
        return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def inference_settings(self) -> dict[str, Any]:
        """What prediction on new images needs to prepare them as training did and to name
        its classes (stored in checkpoints as plain containers)."""
        return {
            "preprocessing": self.preprocessing.to_dict(),
            "class_names": list(self.class_names),
        }
