"""An ensemble trains every member on its own loss and predicts their mean logits."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from lightning_seg.cli import run_cli
from lightning_seg.errors import ConfigurationError
from lightning_seg.inference import Predictor
from lightning_seg.inference.checkpoints import without_pretrained_weights
from lightning_seg.models import MODELS, AuxiliaryOutput, build_model
from lightning_seg.models.ensemble import Ensemble
from lightning_seg.task import SegmentationTask
from tests.cli_helpers import short_fit_args

TWO_TINY = [
    {"model": "unet", "depth": 2, "base_channels": 4},
    {"model": "segnet", "base_channels": 2},
]


class Normalised(nn.Module):
    """A one-layer stand-in for a network with a pretrained encoder's normalisation."""

    def __init__(self, in_channels: int, num_classes: int, mean: float = 0.5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)
        self.input_normalization = ((mean,) * 3, (0.5,) * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_members_each_get_their_own_loss_and_eval_predicts_their_mean_logits():
    task = SegmentationTask(model="ensemble", model_args={"members": TWO_TINY}, loss="bce")
    first, second = task.network.members
    batch = {"image": torch.randn(2, 3, 32, 32), "mask": torch.randint(0, 2, (2, 32, 32))}
    task.train()
    output = task.network(batch["image"])
    assert isinstance(output, AuxiliaryOutput) and len(output.auxiliary) == 1
    expected = task.criterion(first(batch["image"]), batch["mask"]) + task.criterion(
        second(batch["image"]), batch["mask"]
    )
    assert torch.allclose(task.compute_loss(output, batch), expected, atol=1e-5)
    task.eval()
    with torch.no_grad():
        mean = (first(batch["image"]) + second(batch["image"])) / 2
        assert torch.allclose(task(batch["image"]), mean, atol=1e-6)


def test_a_members_auxiliary_heads_keep_their_weights():
    ensemble = build_model("ensemble", 3, 1, members=[{"model": "pspnet"}, *TWO_TINY[:1]])
    output = ensemble.train()(torch.randn(2, 3, 64, 64))
    weights = [weight for _, weight in output.auxiliary]
    assert len(weights) == 2 and weights[-1] == 1.0 and 0 < weights[0] < 1  # PSPNet's aux head


def test_the_ensemble_pads_inputs_for_its_coarsest_member():
    ensemble = build_model("ensemble", 3, 1, members=TWO_TINY)
    assert ensemble.stride == max(m.stride for m in ensemble.members) == 32
    assert ensemble.eval()(torch.randn(1, 3, 45, 37)).shape == (1, 1, 45, 37)


@pytest.mark.parametrize(
    ("members", "named"),
    [
        ([], "two or more members"),
        (TWO_TINY[:1], "two or more members"),
        ([TWO_TINY[0], {"depth": 2}], "members[1]: needs model"),
        ([TWO_TINY[0], "unet"], "members[1]: 'unet' is not {model:"),
        ([TWO_TINY[0], {"model": "ensemble", "members": TWO_TINY}], "not an ensemble"),
        ([TWO_TINY[0], {"model": "unett"}], "members[1]: unknown model 'unett'"),
        ([TWO_TINY[0], {"model": "unet", "widht": 2}], "members[1]: "),
    ],
)
def test_bad_members_are_refused_in_one_line_naming_the_setting(members, named):
    with pytest.raises(ConfigurationError, match=re.escape(named)) as error:
        build_model("ensemble", 3, 1, members=members)
    assert "\n" not in str(error.value)


def test_members_share_their_encoders_normalisation_and_refuse_different_ones(monkeypatch):
    monkeypatch.setitem(MODELS, "normalised", Normalised)
    plain_and_pretrained = [TWO_TINY[0], {"model": "normalised"}]
    ensemble = build_model("ensemble", 3, 1, members=plain_and_pretrained)
    assert ensemble.input_normalization == ((0.5,) * 3, (0.5,) * 3)
    assert build_model("ensemble", 3, 1, members=TWO_TINY).input_normalization is None
    with pytest.raises(ConfigurationError, match="different input normalisations"):
        build_model("ensemble", 3, 1, members=[{"model": "normalised"},
                                               {"model": "normalised", "mean": 0.4}])  # fmt: skip


def test_a_checkpoint_is_rebuilt_without_fetching_any_members_pretrained_weights():
    args = {"members": [{"model": "smp", "encoder_weights": "imagenet"}, {"model": "unet"}]}
    assert without_pretrained_weights(args)["members"][0]["encoder_weights"] is None
    assert args["members"][0]["encoder_weights"] == "imagenet"  # the stored config is untouched


def test_an_ensemble_fits_and_its_checkpoint_predicts_the_mean_of_its_members(tmp_path):
    runs = tmp_path / "runs"
    members = (
        "[{model: unet, depth: 2, base_channels: 4}, "
        "{model: smp, encoder_name: resnet18, encoder_weights: null}]"
    )
    model = ["--model.model=ensemble", f"--model.model_args={{members: {members}}}"]
    flags = short_fit_args(runs, *model, epochs=1, logger=False)
    cli = run_cli(["fit", *flags])
    assert isinstance(cli.model.network, Ensemble)
    assert {"model:ensemble", "encoder:resnet18"} <= set(cli.run_tags())  # W&B tags
    (last,) = runs.rglob("last.ckpt")
    predictor = Predictor(last, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    task = cli.model.eval()
    batch = torch.from_numpy(predictor.preprocessing.normalize(image))[None]
    with torch.no_grad():
        mean = torch.stack([m(batch) for m in task.network.members]).mean(0)
    np.testing.assert_allclose(
        predictor.predict_probabilities(image)[0], torch.sigmoid(mean)[0, 0].numpy(), atol=1e-5
    )
