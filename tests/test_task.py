"""The task's seams: auxiliary heads, thresholds, schedulers, learning rates."""

from __future__ import annotations

import pytest
import torch
from lightning import Callback, Trainer
from torch import nn
from torch.utils.data import DataLoader

from lightning_seg.errors import ConfigurationError
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


class EncoderDecoder(nn.Module):
    """A stand-in for a network with a (pretrained) encoder and a fresh decoder."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.decoder = nn.Conv2d(4, num_classes, 1)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class RecordRates(Callback):
    def __init__(self) -> None:
        self.rates: list[list[float]] = []

    def on_train_batch_start(self, trainer, *args) -> None:
        self.rates.append([group["lr"] for group in trainer.optimizers[0].param_groups])


def test_the_encoder_learns_at_its_scaled_rate_throughout_the_schedule(monkeypatch, tmp_path):
    monkeypatch.setitem(MODELS, "encoder_decoder", EncoderDecoder)
    task = SegmentationTask(
        model="encoder_decoder",
        optimizer=lambda params: torch.optim.AdamW(params, lr=0.01),
        lr_scheduler="onecycle",
        encoder_lr_scale=0.1,
    )
    batches = [
        {"image": torch.randn(2, 3, 8, 8), "mask": torch.randint(0, 2, (2, 8, 8))} for _ in range(6)
    ]
    record = RecordRates()
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        default_root_dir=tmp_path,
    )
    trainer.fit(task, train_dataloaders=DataLoader(batches, batch_size=None))
    encoder_group, rest_group = trainer.optimizers[0].param_groups
    assert {id(p) for p in encoder_group["params"]} == {
        id(p) for p in task.network.encoder.parameters()
    }
    assert {id(p) for p in rest_group["params"]} == {
        id(p) for p in task.network.decoder.parameters()
    }
    assert len(record.rates) == 6
    assert len({rest for _, rest in record.rates}) > 1  # the one-cycle schedule moves both ...
    for encoder_lr, rest_lr in record.rates:  # ... and keeps their ratio
        assert encoder_lr == pytest.approx(0.1 * rest_lr)
    assert max(rest for _, rest in record.rates) <= 0.01


def test_an_encoder_learning_rate_scale_needs_a_network_with_an_encoder(monkeypatch):
    monkeypatch.setitem(MODELS, "left_half", lambda in_channels, num_classes: LeftHalf())
    with pytest.raises(ConfigurationError, match=r"encoder_lr_scale=0\.1 needs a network with an"):
        SegmentationTask(model="left_half", encoder_lr_scale=0.1)
    with pytest.raises(ConfigurationError, match=r"encoder_lr_scale=0\.0: must be > 0"):
        SegmentationTask(model="unet", encoder_lr_scale=0.0)


class PretrainedEncoderDecoder(nn.Module):
    """A stand-in for a network whose encoder holds pretrained weights, batch norms in both."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.pretrained_encoder = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1),
                                                nn.BatchNorm2d(4), nn.ReLU())  # fmt: skip
        self.decoder = nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, num_classes, 1))

    def forward(self, x):
        return self.decoder(self.pretrained_encoder(x))


def test_frozen_encoder_batch_norms_keep_their_statistics_through_fit_and_validation(
    monkeypatch, tmp_path
):
    monkeypatch.setitem(MODELS, "pretrained", PretrainedEncoderDecoder)
    task = SegmentationTask(model="pretrained", freeze_encoder_bn=True)
    encoder_bn, decoder_bn = task.network.pretrained_encoder[1], task.network.decoder[0]
    before = {name: t.clone() for name, t in encoder_bn.state_dict().items()}
    decoder_mean = decoder_bn.running_mean.clone()
    batches = [
        {"image": torch.randn(2, 3, 8, 8) * 3 + 1, "mask": torch.randint(0, 2, (2, 8, 8))}
        for _ in range(3)
    ]
    trainer = Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=1, default_root_dir=tmp_path)  # fmt: skip
    loader = DataLoader(batches, batch_size=None)
    trainer.fit(task, train_dataloaders=loader, val_dataloaders=loader)  # validation between
    assert trainer.global_step == 6
    after = encoder_bn.state_dict()
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(after[name], before[name]), name  # the pretrained statistics
    assert not torch.equal(after["weight"], before["weight"])  # its scale still trains
    assert not torch.equal(decoder_bn.running_mean, decoder_mean)  # the decoder's own update
    assert task.training and not encoder_bn.training and decoder_bn.training


def test_freezing_encoder_batch_norms_needs_a_pretrained_encoder():
    with pytest.raises(ConfigurationError, match="freeze_encoder_bn needs a pretrained encoder"):
        SegmentationTask(model="unet", freeze_encoder_bn=True)
