"""The task's seams: auxiliary heads, thresholds, schedulers."""

from __future__ import annotations

import torch
from torch import nn

from lightning_seg.models import MODELS, AuxiliaryOutput
from lightning_seg.task import SegmentationTask


class TwoHeads(nn.Module):
    """A stand-in for a network with a deep-supervision head (as PSPNet has)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.main = nn.Conv2d(in_channels, num_classes, 1)
        self.aux = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, x):
        logits = self.main(x)
        if self.training:
            half = nn.functional.avg_pool2d(self.aux(x), 2)  # a lower-resolution head
            return AuxiliaryOutput(logits, ((half, 0.4),))
        return logits


def test_auxiliary_heads_add_their_weighted_loss_in_training_only(monkeypatch):
    monkeypatch.setitem(MODELS, "two_heads", TwoHeads)
    task = SegmentationTask(model="two_heads", loss="bce", num_classes=1)
    batch = {"image": torch.randn(2, 3, 8, 8), "mask": torch.randint(0, 2, (2, 8, 8))}
    task.train()
    output = task.network(batch["image"])
    assert isinstance(output, AuxiliaryOutput)
    main_loss = task.criterion(output.logits, batch["mask"])
    up = nn.functional.interpolate(output.auxiliary[0][0], size=(8, 8), mode="bilinear")
    expected = main_loss + 0.4 * task.criterion(up, batch["mask"])
    assert torch.allclose(task.compute_loss(output, batch), expected)
    assert task(batch["image"]).shape == (2, 1, 8, 8)  # forward gives the main head only
    task.eval()
    assert isinstance(task.network(batch["image"]), torch.Tensor)


def test_binary_predictions_use_the_threshold():
    task = SegmentationTask(
        model="unet", model_args={"depth": 1, "base_channels": 2}, threshold=0.7
    )
    logits = torch.logit(torch.tensor([0.6, 0.8])).view(1, 1, 1, 2)
    assert task.predict_labels(logits).tolist() == [[[0, 1]]]


def test_multiclass_predictions_are_the_argmax():
    task = SegmentationTask(
        model="unet", model_args={"depth": 1, "base_channels": 2}, loss="ce", num_classes=3
    )
    logits = torch.tensor([[0.1, 2.0], [3.0, 0.0], [0.0, 0.5]]).view(1, 3, 1, 2)
    assert task.predict_labels(logits).tolist() == [[[1, 0]]]


class LeftHalf(nn.Module):
    """A stand-in network that is sure of the left half of the image only: not flip-invariant."""

    def forward(self, x):
        logits = torch.full_like(x[:, :1], -10.0)
        logits[..., : x.shape[-1] // 2] = 10.0
        return logits


def test_test_time_flips_average_the_probabilities_of_flipped_copies(monkeypatch):
    monkeypatch.setitem(MODELS, "left_half", lambda in_channels, num_classes: LeftHalf())
    images = torch.zeros(1, 3, 2, 4)
    plain = SegmentationTask(model="left_half", channels_last=False)
    flipped = SegmentationTask(model="left_half", channels_last=False, tta="hflip")
    assert plain.probabilities(images)[0, 0, 0].round(decimals=3).tolist() == [1, 1, 0, 0]
    # The mirrored pass is sure of the right half: every pixel averages to one half.
    assert flipped.probabilities(images).sub(0.5).abs().max() < 1e-3
    assert flipped.probabilities(images, tta="none")[0, 0, 0, 0] > 0.99
