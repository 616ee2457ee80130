"""Prediction on new images with a trained checkpoint: ``lightning-seg predict`` and Predictor.

A network only works on images prepared as in training, so everything here follows from what the
checkpoint says about its training data (:func:`inference_settings`, its
:class:`~lightning_seg.preprocessing.Preprocessing`): the normalisation, the training image size,
and whether training saw whole images resized to that size or tiles cut at full resolution.
Each image then reaches the network in one of two ways:

- **resize** (whole images): resized to the training size as the training cache did (area when
  shrinking, bilinear when enlarging), predicted, and the *probabilities* upsampled bilinearly to
  the original size, so the mask has the image's resolution and smooth outlines;
- **sliding window** (tiles): overlapping tiles of the training size at full resolution, each
  tile's probabilities weighted by a smooth 2-D window and accumulated, then divided by the summed
  weights. Tile borders, where a network sees the least context, count least, and the weights vary
  smoothly, so there are no seams.

Test-time augmentation averages probabilities (not logits, not labels) over flipped copies, each
flipped back first. Checkpoints load with ``weights_only=True``: a file that would run code when
unpickled is refused. Masks are written atomically and never over an input; unreadable inputs are
skipped, listed at the end, and make the command exit with status 1.
"""

from lightning_seg.inference.checkpoints import (
    checkpoint_preprocessing,
    inference_settings,
    load_checkpoint,
    load_task,
    resolve_device,
)
from lightning_seg.inference.command import predict_command
from lightning_seg.inference.predictor import Predictor
from lightning_seg.inference.windows import blending_window, tile_starts
from lightning_seg.inference.writing import (
    PredictReport,
    mask_image,
    overlay_image,
    predict_files,
    temporary_path,
    write_png_atomic,
)

__all__ = [
    "PredictReport",
    "Predictor",
    "blending_window",
    "checkpoint_preprocessing",
    "inference_settings",
    "load_checkpoint",
    "load_task",
    "mask_image",
    "overlay_image",
    "predict_command",
    "predict_files",
    "resolve_device",
    "temporary_path",
    "tile_starts",
    "write_png_atomic",
]
