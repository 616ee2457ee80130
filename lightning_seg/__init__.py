"""lightning_seg: semantic segmentation on PyTorch Lightning.

From Python: ``lightning_seg.train("quickstart", trainer={"max_epochs": 3})`` trains as
``make train`` does; ``lightning_seg.Predictor.from_checkpoint(path).predict_mask(image)`` predicts
a NumPy image. Both are imported on first use, so ``import lightning_seg.data`` stays light.
"""

from typing import Any

__all__ = ["Predictor", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from lightning_seg.cli import train

        return train
    if name == "Predictor":
        from lightning_seg.inference import Predictor

        return Predictor
    raise AttributeError(f"module 'lightning_seg' has no attribute {name!r}")
