"""Prediction images in W&B: a fixed set of validation (and test) images with their ground-truth
and predicted masks as interactive mask overlays, so runs can be compared by eye."""

from __future__ import annotations

import numpy as np
import torch
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from torch.utils.data import Dataset


def fixed_indices(length: int, count: int) -> list[int]:
    """The same ``count`` samples spread over the split at every epoch and in every run."""
    return sorted({int(i) for i in np.linspace(0, length - 1, min(count, length))})


class PredictionImages(Callback):
    """Logs ``num_images`` fixed validation images with masks every ``every_n_epochs`` epochs
    (default: four times per run, and at the last epoch), and the same at test; rank 0 only.

    Logged as ``val/predictions`` and ``test/predictions``: W&B image panels whose ground-truth
    and prediction layers can be toggled, with the class names as labels.
    """

    def __init__(self, every_n_epochs: int | None = None, num_images: int = 8) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images

    def due(self, trainer: Trainer) -> bool:
        last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        every = self.every_n_epochs or max(1, (trainer.max_epochs or 4) // 4)
        return last or (trainer.current_epoch + 1) % every == 0

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking and self.due(trainer):
            self.log_split(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.log_split(trainer, pl_module, "test")

    def class_labels(self, pl_module: LightningModule) -> dict[int, str]:
        hp = pl_module.hparams
        names = list(hp.get("class_names") or [])
        if hp["num_classes"] == 1:
            labels = {0: "background", 1: names[0] if names else "foreground"}
        else:
            labels = {i: name for i, name in enumerate(names or range(hp["num_classes"]))}
        if hp.get("ignore_index") is not None:
            labels[int(hp["ignore_index"])] = "ignored"
        return {int(k): str(v) for k, v in labels.items()}

    @staticmethod
    def layers(truth: np.ndarray, prediction: np.ndarray, labels: dict[int, str]) -> dict:
        """The two toggleable mask layers of one W&B image."""
        return {
            "ground_truth": {"mask_data": truth.astype(np.int64), "class_labels": labels},
            "prediction": {"mask_data": prediction.astype(np.int64), "class_labels": labels},
        }

    @torch.no_grad()
    def log_split(self, trainer: Trainer, pl_module: LightningModule, split: str) -> None:
        logger = trainer.logger
        datamodule = trainer.datamodule
        if not trainer.is_global_zero or not isinstance(logger, WandbLogger) or datamodule is None:
            return
        dataset: Dataset | None = getattr(datamodule, "datasets", {}).get(split)
        if dataset is None or len(dataset) == 0:  # type: ignore[arg-type]
            return
        samples = [dataset[i] for i in fixed_indices(len(dataset), self.num_images)]  # type: ignore[arg-type]
        images = torch.stack([s["image"] for s in samples]).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        predictions = pl_module.predict_labels(pl_module(images)).cpu().numpy()
        pl_module.train(was_training)
        # The datamodule's preprocessing normalised these images: the same object undoes it.
        preprocessing = datamodule.preprocessing
        labels = self.class_labels(pl_module)
        logger.log_image(
            key=f"{split}/predictions",
            images=[preprocessing.display(s["image"]) for s in samples],
            step=trainer.global_step,
            masks=[
                self.layers(s["mask"].numpy(), p, labels)
                for s, p in zip(samples, predictions, strict=True)
            ],
        )
