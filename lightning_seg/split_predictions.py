"""``lightning-seg predict --ckpt_path C`` without ``--input``: the test split's masks as files.

LightningCLI's predict runs the network over the datamodule's predict split (the test split)
and, left alone, keeps the results in memory and ends without a word. This writer saves each
sample's mask as a PNG (0/255 binary, class ids multiclass, the same encoding as ``predict
--input``), named after the sample, in the folder of the run whose checkpoint it is. A sample
resized from an image file is pasted back to that image's size the way ``predict --input`` does
it: the probabilities of ``test``'s views resized (bilinear), then the threshold and the
post-processing at full size. Tiles and generated samples stay at the size the network saw.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import torch
import torch.nn.functional as F
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


def at_size(probabilities: Tensor, size: tuple[int, int] | None) -> Tensor:
    """C x h x w probabilities resized to ``size`` (height, width), as ``predict --input``
    resizes them; unchanged when ``size`` is None or already theirs."""
    if size is None or tuple(probabilities.shape[-2:]) == tuple(size):
        return probabilities
    resized = F.interpolate(
        probabilities[None].float(), size=size, mode="bilinear", align_corners=False
    )
    return resized[0]


class SplitMaskWriter(BasePredictionWriter):
    """Writes the mask of every predicted sample under ``output`` (see :func:`mask_file`),
    at the size of the image it came from where the datamodule knows it."""

    def __init__(self, output: Path, split: str = "test") -> None:
        super().__init__(write_interval="batch")
        self.output, self.split = Path(output), split
        self.names: list[str] | None = None
        self.sizes: list[tuple[int, int] | None] = []
        self.written = self.pasted = 0  # by this process; pasted: at their image's own size
        self.total = self.total_pasted = 0  # by every process, once predict has ended

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
            datamodule = trainer.datamodule
            self.names = datamodule.sample_names(self.split)
            self.sizes = datamodule.sample_sizes(self.split)
        binary = pl_module.mode == "binary"
        for probabilities, index in zip(prediction, batch["index"].tolist(), strict=True):
            size = self.sizes[index]
            labels = pl_module.labels_from_probabilities(at_size(probabilities, size)[None])[0]
            path = self.output / mask_file(self.names[index])
            path.parent.mkdir(parents=True, exist_ok=True)
            write_png_atomic(mask_image(labels.cpu().numpy().astype("uint8"), binary), path)
            self.written += 1
            self.pasted += size is not None

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        counts = torch.tensor([float(self.written), float(self.pasted)], device=pl_module.device)
        total, pasted = trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        self.total, self.total_pasted = int(total), int(pasted)

    def summary(self) -> str:
        """One line: how many masks, at which size, where."""
        if self.total_pasted == self.total:
            size = "each at its image's own size"
        elif self.total_pasted == 0:
            size = "at the size the network saw (tiles or generated samples)"
        else:
            size = f"{self.total_pasted} at their image's own size, the rest as tiles"
        return f"predict done: {self.total} test-split masks, {size}, in {self.output}"
