"""One preprocessing object: training (cached or not), the W&B images, predict and the
checkpoint all prepare pixels the same way, and median-frequency weights reach the loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_seg.data.io import read_image
from lightning_seg.errors import ConfigurationError
from lightning_seg.inference import Predictor, inference_settings
from lightning_seg.preprocessing import Preprocessing, pad_to_stride, resize_image
from tests.data.generated import folder_dm, make_folder


def test_preprocessing_survives_the_checkpoint_round_trip() -> None:
    original = Preprocessing(
        image_size=(48, 64), tiled=True, interpolation="cubic", mean=(0.5,), std=(0.25,),
        channels=1, stride=32,
    )  # fmt: skip
    assert Preprocessing.from_dict(original.to_dict()) == original
    assert original.mean == (0.5,) and original.image_size == (48, 64)
    assert Preprocessing(mean=(0.5,), std=(0.5,)).mean == (0.5,) * 3  # one value per channel


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image_size": 0}, "image_size must be one side or"),
        ({"mean": (0.5, 0.5), "std": (1, 1)}, "does not fit 3 input channel"),
        ({"std": (0.2, 0.0, 0.2)}, "one positive std per channel"),
        ({"interpolation": "lanczos"}, "unknown interpolation 'lanczos'"),
    ],
)
def test_bad_preprocessing_is_one_line(fields: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Preprocessing(**fields)


def test_datamodule_names_the_setting_that_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"^data\.image_size must be"):
        folder_dm(tmp_path, image_size=-3)


@pytest.mark.parametrize("cache", [True, False])
def test_training_samples_undo_to_the_resized_image(tmp_path: Path, cache: bool) -> None:
    """The W&B images undo the datamodule's normalisation: with or without the cache, what
    they show is the resized file, not pixels de-normalised with the wrong statistics."""
    root = make_folder(tmp_path / "folder")
    dm = folder_dm(root, cache=cache, mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7))
    dm.prepare_data()
    dm.setup("validate")
    pair = dm.splits()["val"][0]
    sample = dm.datasets["val"][0]
    expected = resize_image(read_image(pair.image, 3), (32, 32))
    shown = dm.preprocessing.display(sample["image"])
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 1


def test_predict_feeds_the_network_what_validation_fed_it(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "folder")
    dm = folder_dm(root, mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7))
    dm.use_network_stride(16)
    dm.prepare_data()
    dm.setup("validate")
    seen: list[torch.Tensor] = []

    class Recorder(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            seen.append(images)
            return images[:, :1]

    stored = {"hyper_parameters": {"num_classes": 1}, "lightning_seg": dm.inference_settings()}
    settings = inference_settings(stored, tmp_path / "x.ckpt")
    assert settings["preprocessing"] == dm.preprocessing and dm.preprocessing.stride == 16
    predictor = Predictor.from_network(Recorder(), settings, sliding_window=False)
    predictor.predict_probabilities(read_image(dm.splits()["val"][0].image, 3))
    torch.testing.assert_close(seen[0][0], dm.datasets["val"][0]["image"])


def test_pad_to_stride_reflects_up_to_the_multiple() -> None:
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    padded = pad_to_stride(x, 4)
    assert padded.shape == (2, 3, 8, 8)
    torch.testing.assert_close(padded[..., :5, :7], x)
    torch.testing.assert_close(padded[..., 5, :7], x[..., 3, :])  # reflection, not zeros


def test_median_frequency_weights_are_linked_from_the_data_into_the_loss(tmp_path: Path) -> None:
    from lightning_seg.entry import main

    root = make_folder(tmp_path / "folder")
    expected = folder_dm(root).median_frequency_weights()
    runs = tmp_path / "runs"
    code = main([
        "fit", "--data=lightning_seg.data.FolderDataModule", f"--data.root={root}",
        "--data.masks={type: palette, colors: [[0, 0, 0], [255, 0, 0], [0, 0, 255]]}",
        "--data.num_classes=3", "--data.image_size=32", "--data.batch_size=4",
        "--data.num_workers=0", "--model.model_args={depth: 2, base_channels: 4}",
        "--model.loss=[{name: ce, class_weights: median_frequency}]",
        "--trainer.max_epochs=1", "--trainer.logger=false", f"--runs_dir={runs}",
    ])  # fmt: skip
    assert code == 0
    state = torch.load(next(runs.rglob("last.ckpt")), weights_only=True, map_location="cpu")
    assert state["hyper_parameters"]["class_weights"] == expected
    assert len(expected) == 3 and max(expected) > min(expected) > 0


def test_median_frequency_without_weights_from_the_data_is_one_line() -> None:
    from lightning_seg.task import SegmentationTask

    with pytest.raises(ConfigurationError, match="median_frequency needs the weights"):
        SegmentationTask(num_classes=3, loss=[{"name": "ce", "class_weights": "median_frequency"}])
