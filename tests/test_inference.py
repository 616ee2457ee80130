"""Prediction: masks at the original resolution, seamless sliding windows, TTA, thresholds and
safety (unsafe checkpoints, bad inputs, atomic writes, inputs never touched)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from lightning_seg.errors import ConfigurationError
from lightning_seg.inference import (
    Predictor,
    blending_window,
    inference_settings,
    load_checkpoint,
    predict_command,
    write_png_atomic,
)
from lightning_seg.preprocessing import Preprocessing

# Tiny tensors: one intra-op thread (conftest.py says why).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def binary_ckpt(tmp_path_factory: pytest.TempPathFactory, fit_checkpoint) -> Path:
    return fit_checkpoint(tmp_path_factory.mktemp("binary"))


@pytest.fixture(scope="module")
def multiclass_ckpt(tmp_path_factory: pytest.TempPathFactory, fit_checkpoint) -> Path:
    return fit_checkpoint(
        tmp_path_factory.mktemp("multiclass"),
        "--data.init_args.num_lesion_classes=2",
        "--model.loss=ce",
    )


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def leftovers(folder: Path) -> list[Path]:
    return list(folder.rglob("*.tmp*"))


# ----------------------------------------------------------------------------- settings
def test_settings_come_from_the_checkpoint(binary_ckpt: Path) -> None:
    settings = inference_settings(load_checkpoint(binary_ckpt), binary_ckpt)
    preprocessing = settings["preprocessing"]
    assert preprocessing.mean == (0.5,) * 3 and preprocessing.std == (0.25,) * 3  # synthetic
    assert preprocessing.image_size == (32, 32) and preprocessing.channels == 3
    assert settings["num_classes"] == 1 and settings["class_names"] == ["lesion"]
    assert preprocessing.tiled is False  # synthetic images are whole images, not tiles
    assert set(settings["sources"].values()) == {"checkpoint"}


def test_settings_fall_back_to_defaults_and_say_so(tmp_path: Path) -> None:
    hparams = {"num_classes": 4, "in_channels": 1}
    settings = inference_settings({"hyper_parameters": hparams}, tmp_path / "x.ckpt")
    preprocessing = settings["preprocessing"]
    assert (preprocessing.mean, preprocessing.std) == ((0.5,), (0.25,))
    assert preprocessing.image_size == (256, 256) and preprocessing.tiled is None
    assert settings["sources"] == {"normalisation": "default (grey)", "image_size": "default"}
    rgb = inference_settings({"hyper_parameters": {"in_channels": 3}}, tmp_path / "y.ckpt")
    assert rgb["preprocessing"].mean == (0.485, 0.456, 0.406)


def test_settings_read_the_flat_entry_of_older_checkpoints(tmp_path: Path) -> None:
    older = {"mean": [0.5], "std": [0.25], "image_size": [128, 96], "in_channels": 1,
             "class_names": ["a", "b"], "tiled": True}  # fmt: skip
    ckpt = {"hyper_parameters": {"num_classes": 2}, "lightning_seg": older}
    settings = inference_settings(ckpt, tmp_path / "old.ckpt")
    preprocessing = settings["preprocessing"]
    assert preprocessing.image_size == (128, 96) and preprocessing.tiled is True
    assert preprocessing.channels == 1 and settings["class_names"] == ["a", "b"]


def test_a_preprocessing_entry_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    ckpt = {"hyper_parameters": {}, "lightning_seg": {"preprocessing": {
        "mean": [0.5, 0.5], "std": [0.25, 0.25], "channels": 3}}}  # fmt: skip
    with pytest.raises(ConfigurationError, match=r"bad.ckpt: bad preprocessing entry .*3 input"):
        inference_settings(ckpt, tmp_path / "bad.ckpt")


# ----------------------------------------------------------------------------- predict command
def test_predict_writes_binary_masks_at_original_resolution(
    binary_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    sizes = {"odd": (75, 111), "small": (20, 13), "large": (130, 97)}
    for seed, (name, (h, w)) in enumerate(sizes.items()):
        save(random_image(h, w, seed), inputs / f"{name}.png")
    save(random_image(40, 52, 9), inputs / "photo.jpg")
    sizes["photo"] = (40, 52)
    before = digests(inputs)
    out = tmp_path / "out"
    code = predict_command(
        ["--ckpt", str(binary_ckpt), "--input", str(inputs), "--output", str(out), "--overlay"]
    )
    assert code == 0
    for name, (h, w) in sizes.items():
        mask = Image.open(out / f"{name}.png")
        assert mask.mode == "L" and mask.size == (w, h)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        overlay = Image.open(out / "overlays" / f"{name}.png")
        assert overlay.mode == "RGB" and overlay.size == (w, h)
    assert digests(inputs) == before and not leftovers(tmp_path)
    assert f"wrote 4 mask(s) to {out}" in capsys.readouterr().out


def test_predict_multiclass_ids_with_sliding_window(multiclass_ckpt: Path, tmp_path: Path) -> None:
    image = save(random_image(130, 97), tmp_path / "in" / "scan.png")
    out = tmp_path / "out"
    argv = ["--ckpt", str(multiclass_ckpt), "--input", str(image), "--output", str(out)]
    assert predict_command([*argv, "--sliding-window", "--tile", "32", "48"]) == 0
    mask = np.asarray(Image.open(out / "scan.png"))
    assert mask.shape == (130, 97) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1, 2}
    predictor = Predictor(multiclass_ckpt, sliding_window=True, tile=(32, 48))
    np.testing.assert_array_equal(mask, predictor.predict_mask(random_image(130, 97)))
    probs = predictor.predict_probabilities(random_image(130, 97))
    assert probs.shape == (3, 130, 97) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def test_stored_threshold_is_used(binary_ckpt: Path, tmp_path: Path) -> None:
    # Move the untrained model's probabilities to about 0.9, then store two thresholds.
    state = torch.load(binary_ckpt, weights_only=True, map_location="cpu")
    state["state_dict"]["network.head.bias"] += 2.5
    paths = {}
    for threshold in (0.5, 0.99):
        state["hyper_parameters"]["threshold"] = threshold
        paths[threshold] = tmp_path / f"t{threshold}.ckpt"
        torch.save(state, paths[threshold])
    image = random_image(75, 111)
    low, high = Predictor(paths[0.5]), Predictor(paths[0.99])
    assert (low.threshold, high.threshold) == (0.5, 0.99)
    probs = low.predict_probabilities(image)[0]
    low_mask, high_mask = low.predict_mask(image), high.predict_mask(image)
    np.testing.assert_array_equal(high_mask, probs > 0.99)
    assert high_mask.sum() < low_mask.sum()
    # --threshold overrides the stored value.
    out = tmp_path / "out"
    source = save(image, tmp_path / "in" / "a.png")
    argv = ["--ckpt", str(paths[0.99]), "--input", str(source), "--output", str(out)]
    assert predict_command([*argv, "--threshold", "0.5"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), low_mask * 255)


def test_tta_changes_probabilities_but_masks_stay_valid(binary_ckpt: Path) -> None:
    image = random_image(75, 111)
    plain = Predictor(binary_ckpt).predict_probabilities(image)
    flipped = Predictor(binary_ckpt, tta="flips")
    averaged = flipped.predict_probabilities(image)
    assert np.abs(averaged - plain).max() > 1e-6
    assert averaged.min() >= 0.0 and averaged.max() <= 1.0
    assert set(np.unique(flipped.predict_mask(image))) <= {0, 1}


# ----------------------------------------------------------------------------- stand-ins
class Pixelwise(nn.Module):
    """A flip-equivariant stand-in: logits are a fixed per-pixel function of the input."""

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 1)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=generator))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Constant(nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(x.shape[0], -1, x.shape[2], x.shape[3])


def settings_for(num_classes: int = 1, size: tuple[int, int] = (32, 32), tiled=None) -> dict:
    preprocessing = Preprocessing(image_size=size, tiled=tiled, mean=(0.5,), std=(0.25,))
    return {"preprocessing": preprocessing, "num_classes": num_classes, "threshold": 0.5}


def smooth_image(height: int, width: int) -> np.ndarray:
    """Pixels that vary smoothly with position: a per-pixel stand-in's output does too."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [
        127.5 + 127.5 * np.sin(xx / 9.0 + yy / 23.0),
        255.0 * xx / max(width - 1, 1),
        255.0 * yy / max(height - 1, 1),
    ]
    return np.rint(np.stack(channels, axis=2)).astype(np.uint8)


def expected_probabilities(network: Pixelwise, image: np.ndarray, num_classes: int) -> np.ndarray:
    pixels = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255.0
    with torch.no_grad():
        logits = network((pixels - 0.5) / 0.25)
    probs = torch.sigmoid(logits) if num_classes == 1 else torch.softmax(logits, 1)
    return probs[0].numpy()


@pytest.mark.parametrize(
    ("num_classes", "tile", "overlap", "size"),
    [(1, (32, 32), 0.5, (100, 143)), (3, (24, 40), 0.25, (77, 61)), (1, (32, 32), 0.5, (20, 15))],
)
def test_sliding_window_has_no_seams(
    num_classes: int, tile: tuple[int, int], overlap: float, size: tuple[int, int]
) -> None:
    network = Pixelwise(num_classes)
    predictor = Predictor.from_network(
        network, settings_for(num_classes), sliding_window=True, tile=tile, overlap=overlap
    )
    image = smooth_image(*size)
    got = predictor.predict_probabilities(image)
    np.testing.assert_allclose(got, expected_probabilities(network, image, num_classes), atol=1e-5)
    # Every tile predicting the same constant must blend to exactly that constant everywhere.
    constant = Predictor.from_network(
        Constant([0.7, -1.2, 0.3][:num_classes]), settings_for(num_classes),
        sliding_window=True, tile=tile, overlap=overlap, batch_size=3,
    )  # fmt: skip
    logits = torch.tensor([0.7, -1.2, 0.3][:num_classes])
    value = torch.sigmoid(logits) if num_classes == 1 else torch.softmax(logits, 0)
    blended = constant.predict_probabilities(image)
    assert np.abs(blended - value.numpy()[:, None, None]).max() < 1e-5


def test_blending_window_is_smooth_and_positive() -> None:
    window = blending_window(32, 48)[0]
    assert window.min() >= 0.01 and abs(float(window.max()) - 1.0) < 0.01
    assert torch.allclose(window, window.flip(0)) and torch.allclose(window, window.flip(1))


def test_predict_averages_the_views_the_checkpoint_was_tested_with_unless_told_otherwise(
    binary_ckpt: Path, tmp_path: Path
) -> None:
    state = torch.load(binary_ckpt, weights_only=True, map_location="cpu")
    state["hyper_parameters"]["tta"] = "flips"  # as a fit with --model.tta=flips writes
    ckpt = tmp_path / "flips.ckpt"
    torch.save(state, ckpt)
    image = random_image(48, 40)
    default = Predictor(ckpt)
    assert default.tta == "flips"
    np.testing.assert_array_equal(
        default.predict_probabilities(image),
        Predictor(ckpt, tta="flips").predict_probabilities(image),
    )
    plain = Predictor(ckpt, tta="none")
    assert plain.tta == "none"
    assert (
        np.abs(plain.predict_probabilities(image) - default.predict_probabilities(image)).max()
        > 1e-6
    )
    assert Predictor(binary_ckpt).tta == "none"  # a checkpoint tested without views


def test_tta_of_a_pixelwise_network_equals_none_on_non_square_images() -> None:
    network = Pixelwise(1)
    image = smooth_image(45, 70)
    results = [
        Predictor.from_network(network, settings_for(), tta=tta).predict_probabilities(image)
        for tta in ("none", "hflip", "vflip", "flips", "d4")
    ]
    for result in results[1:]:
        np.testing.assert_allclose(result, results[0], atol=1e-6)


def test_multiscale_tta_predicts_at_the_original_resolution_close_to_one_scale() -> None:
    """``flips_scales`` resizes the network input, then the probabilities back: on a smooth image
    a pixel-wise network's map stays close to the one-scale one, at the image's own size."""
    settings = settings_for(size=(256, 256))  # 7/8 and 9/8 of it: 224 and 288
    image = smooth_image(180, 280)
    one = Predictor.from_network(Pixelwise(1), settings, tta="none").predict_probabilities(image)
    multi = Predictor.from_network(Pixelwise(1), settings, tta="flips_scales")
    probs = multi.predict_probabilities(image)
    assert probs.shape == one.shape == (1, 180, 280)
    assert 0 < np.abs(probs - one).max() < 0.05


def test_resize_path_upsamples_probabilities() -> None:
    predictor = Predictor.from_network(Pixelwise(1), settings_for(size=(32, 32)))
    image = smooth_image(50, 37)
    probs = predictor.predict_probabilities(image)
    assert probs.shape == (1, 50, 37) and not predictor.uses_sliding_window((50, 37))


def test_sliding_window_decision() -> None:
    unknown = Predictor.from_network(Pixelwise(1), settings_for(size=(32, 32)))
    assert not unknown.uses_sliding_window((64, 64))
    assert unknown.uses_sliding_window((65, 40)) and unknown.uses_sliding_window((30, 70))
    tiled = Predictor.from_network(Pixelwise(1), settings_for(tiled=True))
    assert tiled.uses_sliding_window((32, 32))
    resized = Predictor.from_network(Pixelwise(1), settings_for(tiled=False))
    assert not resized.uses_sliding_window((1280, 1918))
    forced = Predictor.from_network(Pixelwise(1), settings_for(tiled=False), sliding_window=True)
    assert forced.uses_sliding_window((32, 32))


# ----------------------------------------------------------------------------- safety
class Payload:
    """Pickles as a call to os.system: what a malicious checkpoint would run on loading."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch '{self.marker}'",))


def test_malicious_checkpoint_is_refused_and_its_payload_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": Payload(marker)}, "hyper_parameters": {}}, path)
    for attempt in (
        lambda: Predictor(path),
        lambda: predict_command(["--ckpt", str(path), "--input", str(tmp_path), "--output", "o"]),
    ):
        with pytest.raises(ConfigurationError) as error:
            attempt()
        message = str(error.value)
        assert str(path) in message and "not a plain-tensor checkpoint" in message
        assert "\n" not in message
        assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_bad_inputs_are_skipped_and_listed(
    binary_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    save(random_image(40, 30), inputs / "good.png")
    whole = save(random_image(64, 64, 1), tmp_path / "whole.png").read_bytes()
    (inputs / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (inputs / "notes.png").write_text("not an image, despite the name\n")
    save(random_image(120, 120, 2), inputs / "huge.png")
    text = tmp_path / "notes.txt"
    text.write_text("a text file named on the command line\n")
    before = digests(inputs)
    out = tmp_path / "out"
    argv = ["--ckpt", str(binary_ckpt), "--input", str(inputs), str(text), "--output", str(out)]
    code = predict_command([*argv, "--max-pixels", "10000", "--no-progress"])
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]
    err = capsys.readouterr().err
    assert "skipped 4 unreadable input(s)" in err
    for name, problem in [
        ("truncated.png", "truncated or corrupt"),
        ("notes.png", "not an image file"),
        ("huge.png", "too many pixels"),
        ("notes.txt", "not an image file"),
    ]:
        assert any(name in line and problem in line for line in err.splitlines()), (name, err)
    assert digests(inputs) == before and not leftovers(tmp_path)


def test_inputs_are_never_overwritten(binary_ckpt: Path, tmp_path: Path) -> None:
    source = save(random_image(40, 30), tmp_path / "out" / "overlays" / "a.png")
    before = digests(source.parent)
    argv = ["--ckpt", str(binary_ckpt), "--input", str(source)]
    # The masks' folder, or the overlays' folder, may not be a folder that holds inputs.
    for output in (source.parent, source.parent.parent):
        with pytest.raises(ConfigurationError, match="holds input images"):
            predict_command([*argv, "--output", str(output), "--overlay"])
    assert digests(source.parent) == before


def test_interrupted_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "mask.png"

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_png_atomic(np.zeros((4, 4), np.uint8), target)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_png_atomic(np.full((4, 4), 255, np.uint8), target)
    assert np.asarray(Image.open(target)).min() == 255 and not leftovers(tmp_path)
