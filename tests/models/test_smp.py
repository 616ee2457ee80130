"""The SMP wrapper: every architecture, clear configuration errors, downloads and local weights.

Downloads go to a real HTTP server on 127.0.0.1 that speaks the part of the Hugging Face Hub
protocol that ``hf_hub_download`` uses (HEAD then GET on ``/{repo}/resolve/{revision}/{file}``).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.constants
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torchvision
from safetensors.torch import save as safetensors_bytes
from safetensors.torch import save_file

from lightning_seg.errors import ConfigurationError
from lightning_seg.models import MODELS, build_model
from lightning_seg.models.smp import SMPModel, architectures
from lightning_seg.models.weights import WeightsUnavailableError


def tiny(arch: str = "Unet", **kwargs) -> SMPModel:
    kwargs.setdefault("encoder_name", "resnet18")
    kwargs.setdefault("encoder_weights", None)
    return SMPModel(in_channels=kwargs.pop("in_channels", 3), num_classes=2, arch=arch, **kwargs)


def random_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Distinctive values, so equal tensors prove a load and not a shared initialisation."""
    state = module.state_dict()
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}


# --- architectures and sizes ---------------------------------------------------------------------

# DPT only takes ViT-style timm encoders; PAN's pyramid pooling needs inputs of 128 or more.
ARCH_ARGS = {
    "DPT": {"encoder_name": "tu-vit_tiny_patch16_224", "dynamic_img_size": True},
}
ARCH_SIZES = {"PAN": [(128, 128), (100, 130)]}


@pytest.mark.parametrize("arch", sorted(architectures()))
def test_every_smp_architecture_returns_logits_at_the_input_size(arch):
    model = tiny(arch, **ARCH_ARGS.get(arch, {}))
    for size in ARCH_SIZES.get(arch, [(64, 64), (50, 70)]):
        assert model(torch.randn(2, 3, *size)).shape == (2, 2, *size)


def test_registry_builds_smp_and_extra_args_reach_the_architecture():
    model = build_model(
        "smp",
        in_channels=4,
        num_classes=3,
        arch="unet",
        encoder_name="resnet18",
        encoder_weights=None,
        encoder_depth=3,
        decoder_channels=(32, 16, 8),
    )
    assert "smp" in MODELS and isinstance(model.model, smp.Unet)
    assert model.stride == 8  # 2 ** encoder_depth
    assert model.model.segmentation_head[0].in_channels == 8
    assert model(torch.randn(1, 4, 36, 44)).shape == (1, 3, 36, 44)


def test_every_parameter_receives_a_gradient():
    model = tiny("FPN")
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"arch": "SegNetXL"}, r"valid choices for SMP architecture: .*DeepLabV3Plus.*Unet"),
        ({"encoder_name": "resnet19"}, r"unknown SMP encoder 'resnet19'.*resnet18.*tu-"),
        ({"encoder_name": "tu-not_a_timm_net"}, r"unknown timm model 'not_a_timm_net'"),
        ({"encoder_weights": "imagenett"}, r"unknown encoder_weights 'imagenett'.*imagenet"),
        ({"encoder_weights": "weights/missing.pth"}, r"no such file: weights/missing\.pth"),
        ({"decoder_channels": (8, 8)}, r"cannot build SMP Unet with encoder 'resnet18'"),
        ({"decoder_colour": "red"}, r"unknown model_args decoder_colour .*decoder_channels"),
        ({"encoder_name": "tu-resnet18", "decoder_colour": "red"}, r"decoder_colour"),
        ({"activation": "sigmoid"}, r"expects logits"),
        ({"aux_params": {"classes": 2}}, r"aux_params"),
    ],
)
def test_configuration_mistakes_are_one_clear_line(kwargs, expected):
    with pytest.raises(ConfigurationError, match=expected) as caught:
        tiny(**kwargs)
    assert "\n" not in str(caught.value)


# --- downloads from a local hub ------------------------------------------------------------------


@dataclass
class LocalHub:
    """Files it serves by name under any ``/{repo}/resolve/{revision}/``; the rest is 404."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


def _handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def respond(self, with_body: bool) -> None:
            hub.requests.append(f"{self.command} {self.path}")
            parts = self.path.split("?")[0].split("/")
            content = hub.files.get(parts[-1]) if "resolve" in parts else None
            if content is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            revision = parts[parts.index("resolve") + 1]
            commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else "a" * 40
            self.send_response(200)
            self.send_header("Content-Length", str(len(content)))
            self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
            self.send_header("X-Repo-Commit", commit)  # the hub client requires both headers
            self.end_headers()
            if with_body:
                self.wfile.write(content)

        def do_HEAD(self) -> None:
            self.respond(with_body=False)

        def do_GET(self) -> None:
            self.respond(with_body=True)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A hub mirror on 127.0.0.1 with an empty cache under tmp_path, as ``HF_ENDPOINT`` sets up.

    huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the cache folder from the
    environment once, at import, so the test sets its module constants as well as the variables.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)  # type: ignore[arg-type]
    hub = LocalHub(url=f"http://127.0.0.1:{server.server_port}")
    server.RequestHandlerClass = _handler(hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    constants = huggingface_hub.constants
    for name, value in {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    template = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield hub
    server.shutdown()
    server.server_close()
    thread.join()


def assert_says_both_ways_forward(error: BaseException, encoder: str) -> None:
    message = str(error)
    assert isinstance(error, WeightsUnavailableError) and isinstance(error, ConfigurationError)
    assert f"weights for encoder '{encoder}' could not be downloaded" in message
    assert "encoder_weights: /path/to/weights.pth" in message
    assert "encoder_weights: null" in message
    assert "\n" not in message


@pytest.mark.parametrize("encoder", ["resnet18", "tu-resnet18"])
def test_download_failure_is_one_line_with_both_ways_forward(hub, encoder):
    with pytest.raises(WeightsUnavailableError) as caught:
        tiny(encoder_name=encoder, encoder_weights="imagenet")
    assert_says_both_ways_forward(caught.value, encoder)
    assert "404" in str(caught.value)
    assert any(r.startswith("HEAD ") for r in hub.requests)  # it did ask our server


def test_offline_mode_fails_at_once_with_both_ways_forward(hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError) as caught:
        tiny(encoder_weights="imagenet")
    assert_says_both_ways_forward(caught.value, "resnet18")
    assert not hub.requests


def test_downloaded_weights_are_the_served_ones(hub):
    torch.manual_seed(0)
    encoder = smp.encoders.get_encoder("resnet18", weights=None)
    served = random_state(encoder)
    hub.files["model.safetensors"] = safetensors_bytes(served)
    hub.files["config.json"] = json.dumps({"mean": [0.5] * 3, "std": [0.25] * 3}).encode()
    model = tiny(encoder_weights="imagenet")
    repo = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]["repo_id"]
    assert any(
        f"GET /{repo}/resolve/" in r and r.endswith("model.safetensors") for r in hub.requests
    )
    loaded = model.encoder.state_dict()
    assert loaded.keys() == served.keys()
    assert all(torch.equal(loaded[k], served[k]) for k in served)


# --- local weight files --------------------------------------------------------------------------


def assert_encoder_equals(model: SMPModel, expected: dict[str, torch.Tensor], prefix: str = ""):
    loaded = model.encoder.state_dict()
    compared = [k for k in loaded if not k.endswith("num_batches_tracked")]
    assert compared and all(torch.equal(loaded[k], expected[prefix + k]) for k in compared)


def test_local_encoder_state_dict_loads(tmp_path):
    expected = random_state(smp.encoders.get_encoder("resnet18", weights=None))
    torch.save(expected, tmp_path / "encoder.pth")
    assert_encoder_equals(tiny(encoder_weights=str(tmp_path / "encoder.pth")), expected)


def test_local_classifier_state_dict_drops_its_head(tmp_path):
    classifier = random_state(torchvision.models.resnet18(num_classes=10))
    assert "fc.weight" in classifier
    save_file(classifier, tmp_path / "resnet18.safetensors")
    assert_encoder_equals(tiny(encoder_weights=tmp_path / "resnet18.safetensors"), classifier)


def test_local_timm_classifier_loads_into_a_timm_universal_encoder(tmp_path):
    # The encoder keeps the timm net as `.model` and renames stages (`stem.0` -> `stem_0`).
    classifier = random_state(timm.create_model("convnext_atto", pretrained=False))
    torch.save({"state_dict": classifier}, tmp_path / "convnext.ckpt")
    model = tiny(encoder_name="tu-convnext_atto", encoder_weights=str(tmp_path / "convnext.ckpt"))
    loaded = model.encoder.state_dict()
    assert torch.equal(loaded["model.stem_0.weight"], classifier["stem.0.weight"])
    assert torch.equal(
        loaded["model.stages_3.blocks.1.mlp.fc2.weight"],
        classifier["stages.3.blocks.1.mlp.fc2.weight"],
    )


def test_local_weights_from_a_whole_segmentation_model(tmp_path):
    source = tiny("FPN")
    torch.save(source.state_dict(), tmp_path / "fpn.pt")  # keys: model.encoder.*, model.decoder.*
    expected = source.encoder.state_dict()
    assert_encoder_equals(tiny("Unet", encoder_weights=str(tmp_path / "fpn.pt")), expected)


def test_local_rgb_weights_adapt_to_one_input_channel(tmp_path):
    expected = random_state(smp.encoders.get_encoder("resnet18", weights=None))
    torch.save(expected, tmp_path / "encoder.pth")
    model = tiny(in_channels=1, encoder_weights=str(tmp_path / "encoder.pth"))
    conv1 = model.encoder.state_dict()["conv1.weight"]
    assert torch.allclose(conv1, expected["conv1.weight"].sum(1, keepdim=True))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)


def test_local_weights_missing_tensors_name_the_file_and_keys(tmp_path):
    partial = random_state(smp.encoders.get_encoder("resnet18", weights=None))
    del partial["layer4.1.conv2.weight"]
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(
        ConfigurationError, match=r"partial\.pth lacks 1 .*layer4\.1\.conv2\.weight"
    ):
        tiny(encoder_weights=str(tmp_path / "partial.pth"))


def test_local_weights_of_another_encoder_are_refused(tmp_path):
    other = random_state(smp.encoders.get_encoder("resnet50", weights=None))
    torch.save(other, tmp_path / "resnet50.pth")
    with pytest.raises(ConfigurationError, match=r"resnet50\.pth .*wrong shape.*layer1"):
        tiny(encoder_weights=str(tmp_path / "resnet50.pth"))


def test_unreadable_weights_file_is_a_clear_error(tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigurationError, match=r"cannot read weights file .*broken\.pth"):
        tiny(encoder_weights=str(tmp_path / "broken.pth"))


def test_pretrained_timm_encoders_report_their_own_normalisation():
    from lightning_seg.models.smp import IMAGENET_NORMALIZATION, encoder_normalization

    # EfficientNet-Lite was trained on pixels scaled to [-1, 1], not on ImageNet statistics.
    assert encoder_normalization("tu-tf_efficientnet_lite0") == ((0.5,) * 3, (0.5,) * 3)
    assert encoder_normalization("resnet34") == IMAGENET_NORMALIZATION


def test_the_pretrained_encoder_is_the_encoder_only_when_it_has_weights(tmp_path):
    assert tiny().pretrained_encoder is None  # encoder_weights: null, nothing to keep frozen
    torch.save(random_state(smp.encoders.get_encoder("resnet18", weights=None)), tmp_path / "e.pth")
    model = tiny(encoder_weights=str(tmp_path / "e.pth"))
    assert model.pretrained_encoder is model.encoder
