"""``lightning-seg predict --ckpt_path C`` without ``--input``: the test split's masks as files.

LightningCLI's predict runs the network over the datamodule's predict split (the test split)
and, left alone, keeps the labels in memory and ends without a word. This writer saves each
sample's mask as a PNG (0/255 binary, class ids multiclass, the same encoding as ``predict
--input``), named after the sample, in the folder of the run whose checkpoint it is. The masks
are at the size the network saw (resized images or tiles): for masks at each image's own size,
``predict --input FILES --output DIR`` is the command.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import torch
from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from lightning_seg.inference.writing import mask_image, write_png_atomic


def mask_file(name: str) -> PurePosixPath:
    """Where a sample's mask goes below the output folder: its image's path relative to the
    data folder with ``.png`` (``PH2Dataset/.../IMD015.png``), a tile's corner kept in the name
    (``img#0,256.png``); synthetic samples are ``test-0007.png``."""
    path, _, tile = name.partition("#")
    relative = PurePosixPath(*(p for p in PurePosixPath(path).parts if p not in ("", "/", "..")))
    stem = f"{relative.stem}#{tile}" if tile else relative.stem
    return relative.with_name(f"{stem}.png")


class SplitMaskWriter(BasePredictionWriter):
    """Writes the mask of every predicted sample under ``output`` (see :func:`mask_file`)."""

    def __init__(self, output: Path, split: str = "test") -> None:
        super().__init__(write_interval="batch")
        self.output, self.split = Path(output), split
        self.names: list[str] | None = None
        self.written = 0  # by this process
        self.total = 0  # by every process, once predict has ended

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Tensor,
        batch_indices: Any,
        batch: dict[str, Tensor],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.names is None:
            self.names = trainer.datamodule.sample_names(self.split)
        binary = pl_module.mode == "binary"
        labels = prediction.detach().cpu().numpy()
        for mask, index in zip(labels, batch["index"].tolist(), strict=True):
            path = self.output / mask_file(self.names[index])
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png_atomic(mask_image(mask.astype("uint8"), binary), path)
            self.written += 1

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        written = torch.tensor(float(self.written), device=pl_module.device)
        self.total = int(trainer.strategy.reduce(written, reduce_op="sum").item())
