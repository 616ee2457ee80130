"""Export: ONNX, TorchScript and torch.export files that match PyTorch at other batch (and,
where dynamic, spatial) sizes than the example's, carry the input normalisation, and are
written only once checked."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from lightning_seg.errors import ConfigurationError
from lightning_seg.export import (
    export_command,
    export_onnx,
    export_pt2,
    export_torchscript,
    fixed_size_reason,
    onnx_runner,
)
from lightning_seg.export_checks import TOLERANCE
from lightning_seg.inference import load_task
from lightning_seg.models import build_model
from lightning_seg.preprocessing import Preprocessing

# Tiny tensors: one intra-op thread (conftest.py says why).
pytestmark = pytest.mark.usefixtures("one_thread")


SETTINGS = {
    "preprocessing": Preprocessing(image_size=(32, 48), mean=(0.5,), std=(0.25,)),
    "num_classes": 2,
    "class_names": ["skin", "lesion"],
    "threshold": 0.5,
    "model": "test",
}
# Batch sizes and spatial sizes of the parity checks: the export size and one that is not (and
# is no multiple of any network's stride).
BATCHES = (1, 3)
SIZES = ((32, 48), (27, 53))


def calibrated(network: nn.Module) -> nn.Module:
    """Random weights with batch-norm statistics measured on random inputs, so that activations
    keep their scale through every layer (freshly initialised running statistics let a narrow
    deep network output almost a constant, which would make parity trivially true)."""
    torch.manual_seed(0)
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    network.train()
    with torch.no_grad():
        for _ in range(2):
            network(torch.randn(4, 3, 32, 48))
    return network.eval()


def torch_logits(network: nn.Module, images: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return network(images).numpy()


def seeded(name: str, **options) -> Callable[[], nn.Module]:
    """A builder of the same weights whichever tests ran before: initialisation draws from the
    global generator, so without a seed a test's network depended on the test order."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        return build_model(name, 3, 2, **options)

    return build


NETWORKS = {
    "unet": seeded("unet", depth=2, base_channels=4),
    "segnet": seeded("segnet", base_channels=4),
    "pspnet": seeded("pspnet", base_channels=4, layers=(1, 1, 1, 1)),
}


def assert_matches(got: np.ndarray, expected: np.ndarray, where: object) -> None:
    """Exported and PyTorch logits agree within export's own tolerance: 1e-4 of the logits'
    scale (float32 convolutions in another order differ by about 1e-5 of it; an absolute 1e-4
    failed now and then on logits of magnitude 5-8)."""
    difference = float(np.abs(got - expected).max())
    bound = TOLERANCE * max(1.0, float(np.abs(expected).max()))
    assert difference <= bound, (where, difference, bound)


def assert_onnx_parity(path: Path, network: nn.Module, sizes: tuple[tuple[int, int], ...]) -> None:
    """ONNX Runtime and PyTorch agree at every batch size and spatial size."""
    run = onnx_runner(path)
    generator = torch.Generator().manual_seed(1)
    channels = network(torch.zeros(1, 3, 32, 32)).shape[1]
    for size in sizes:
        for batch in BATCHES:
            images = torch.randn(batch, 3, *size, generator=generator)
            expected = torch_logits(network, images)
            got = run(images.numpy())
            assert got.shape == expected.shape == (batch, channels, *size)
            assert_matches(got, expected, (size, batch))


def test_segnet_onnx_matches_pytorch_at_dynamic_batch_and_size(tmp_path: Path) -> None:
    network = calibrated(NETWORKS["segnet"]())
    path = tmp_path / "segnet.onnx"
    result = export_onnx(network, path, SETTINGS, check=False)
    assert result["dynamic_spatial"] and not list(tmp_path.glob("*.tmp*"))
    assert_onnx_parity(path, network, SIZES)
    # The outputs are not a trivial constant, which would make parity meaningless.
    assert torch_logits(network, torch.randn(1, 3, *SIZES[1])).std() > 0.1
    model = onnx.load(str(path))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    metadata = {p.key: p.value for p in model.metadata_props}
    assert json.loads(metadata["mean"]) == [0.5] * 3 and json.loads(metadata["std"]) == [0.25] * 3
    assert json.loads(metadata["class_names"]) == ["skin", "lesion"]
    for value in (model.graph.input[0], model.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert [dims[i].dim_param for i in (0, 2, 3)] == ["batch", "height", "width"]
    assert model.model_version >= 1


def test_pspnet_onnx_fixes_the_spatial_size(tmp_path: Path) -> None:
    network = NETWORKS["pspnet"]()
    assert "AdaptiveAvgPool2d" in (fixed_size_reason(network) or "")
    assert fixed_size_reason(NETWORKS["unet"]()) is None


def test_tensorflow_same_padding_fixes_the_spatial_size_and_exports_at_it(tmp_path: Path) -> None:
    # timm's Conv2dSame (the EfficientNet-Lite encoders' stem) pads by the input size at run
    # time; with symbolic H x W the exporter's shape reasoning did not finish.
    from timm.layers import Conv2dSame

    network = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.Upsample(scale_factor=2),
                            nn.Conv2d(4, 1, 1)).eval()  # fmt: skip
    assert "Conv2dSame" in (fixed_size_reason(network) or "")
    result = export_onnx(network, tmp_path / "same.onnx", SETTINGS, (32, 32), check=True)
    assert not result["dynamic_spatial"] and result["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("name", ["unet", "pspnet"])
def test_torchscript_matches_pytorch(name: str, tmp_path: Path) -> None:
    network = calibrated(NETWORKS[name]())
    path = tmp_path / f"{name}.pt"
    assert export_torchscript(network, path, SETTINGS, check=False)["method"] == "trace"
    extra = {"lightning_seg.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(json.loads(extra["lightning_seg.json"])["mean"]) == [0.5] * 3
    generator = torch.Generator().manual_seed(2)
    for size in SIZES:
        for batch in BATCHES:
            images = torch.randn(batch, 3, *size, generator=generator)
            with torch.inference_mode():
                got = loaded(images).numpy()
            assert_matches(got, torch_logits(network, images), (name, size, batch))


def test_torchscript_refuses_a_network_it_cannot_keep_dynamic(tmp_path: Path) -> None:
    # SegNet's unpooling neither traces nor scripts: a clear refusal, and no file.
    with pytest.raises(ConfigurationError, match="use --format onnx"):
        export_torchscript(NETWORKS["segnet"](), tmp_path / "segnet.pt", SETTINGS)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["unet", "segnet", "pspnet"])
def test_pt2_program_matches_pytorch_at_any_batch_and_stride_multiple_with_its_metadata(
    name: str, tmp_path: Path
) -> None:
    network = calibrated(NETWORKS[name]())
    path = tmp_path / f"{name}.pt2"
    result = export_pt2(network, path, SETTINGS, check=False)
    extra = {"lightning_seg.json": ""}
    program = torch.export.load(str(path), extra_files=extra).module()
    metadata = json.loads(extra["lightning_seg.json"])
    assert json.loads(metadata["mean"]) == [0.5] * 3
    assert json.loads(metadata["image_size"]) == [32, 48]
    stride = int(metadata["stride"])
    # PSPNet's pyramid pools to fixed bins: its windows depend on the size, which stays fixed.
    assert result["dynamic_spatial"] == (name != "pspnet")
    sizes = [(32, 48)]
    if result["dynamic_spatial"]:
        assert (
            metadata["dynamic_spatial"]
            == f"true (H and W multiples of {stride}, from {2 * stride})"
        )
        sizes = [tuple(result["size"]), (2 * stride, 5 * stride), (7 * stride, 3 * stride)]
    generator = torch.Generator().manual_seed(3)
    for (height, width), batch in ((s, b) for s in sizes for b in (1, 3, 5)):
        images = torch.randn(batch, 3, height, width, generator=generator)
        with torch.inference_mode():
            got = program(images).numpy()
        assert got.shape == (batch, 2, height, width)
        assert_matches(got, torch_logits(network, images), (name, batch, height))


def test_pt2_fixed_size_keeps_the_training_size_and_says_why(tmp_path: Path) -> None:
    network = calibrated(NETWORKS["unet"]())
    result = export_pt2(network, tmp_path / "unet.pt2", SETTINGS, fixed_size=True)
    assert not result["dynamic_spatial"] and result["sizes"] == [(32, 48)]
    program = torch.export.load(str(tmp_path / "unet.pt2")).module()
    with pytest.raises(Exception, match=r"Guard failed"):
        program(torch.randn(1, 3, 64, 48))


class SizeBranching(nn.Module):
    """A network whose output depends on a Python ``if`` on its input width."""

    stride = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.conv(images)
        return logits * 2 if images.shape[-1] == 48 else logits


def test_pt2_falls_back_to_the_training_size_when_the_network_branches_on_it(
    tmp_path: Path,
) -> None:
    result = export_pt2(SizeBranching().eval(), tmp_path / "branching.pt2", SETTINGS)
    assert not result["dynamic_spatial"] and result["sizes"] == [(32, 48)]
    assert result["fixed_reason"].startswith("torch.export could not keep H and W free")
    assert result["max_abs_diff"] < 1e-6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, fit_checkpoint) -> Path:
    return fit_checkpoint(tmp_path_factory.mktemp("runs"))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_export_command(
    fmt: str, checkpoint: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / f"model.{fmt}"
    code = export_command(["--ckpt", str(checkpoint), "--format", fmt, "--output", str(output)])
    assert code == 0 and output.is_file() and not list(tmp_path.glob("*.tmp*"))
    printed, errors = capfd.readouterr()
    # No library chatter: torch.export warns about (and refuses to load) a file not named .pt2,
    # which the temporary file written before the check once was.
    assert "Unable to load" not in errors and ".tmp" not in errors
    assert str(output) in printed
    difference = float(printed.split(f"max |{fmt} - torch| = ")[1].split()[0])
    scale = float(printed.split("(largest |logit| ")[1].split(")")[0])
    assert difference <= TOLERANCE * max(1.0, scale)
    if fmt == "pt2":  # the checkpoint's U-Net takes any multiple of its stride
        stride = load_task(checkpoint)[0].network.stride
        assert f"note: batch, H and W dynamic: H and W multiples of {stride}, from" in printed
    if fmt == "onnx":
        # The checkpoint's U-Net, checked here independently of the command's own check.
        assert_onnx_parity(output, load_task(checkpoint)[0].network, ((32, 32), (27, 53)))
        metadata = {p.key: p.value for p in onnx.load(str(output)).metadata_props}
        assert json.loads(metadata["class_names"]) == ["lesion"]
        assert json.loads(metadata["image_size"]) == [32, 32]
        assert json.loads(metadata["mean"]) == [0.5, 0.5, 0.5]
        # The whole preprocessing of the checkpoint, as predict reads it.
        stored = Preprocessing.from_dict(json.loads(metadata["preprocessing"]))
        assert stored == load_task(checkpoint)[1]["preprocessing"]


def test_export_command_refuses_an_unsafe_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": print}, "hyper_parameters": {}}, path)
    with pytest.raises(ConfigurationError, match="not a plain-tensor checkpoint"):
        export_command(["--ckpt", str(path), "--output", str(tmp_path / "m.onnx")])
    assert not (tmp_path / "m.onnx").exists()
