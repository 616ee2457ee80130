"""From config to decoder: the decoder types by name, and their options checked."""

from __future__ import annotations

import inspect
from typing import Any

from lightning_seg.data.masks.decoder import MaskDecoder
from lightning_seg.data.masks.palette import PaletteMask
from lightning_seg.data.masks.values import BinaryMask, GreyMask, IndexMask
from lightning_seg.errors import ConfigurationError, unknown_choice

MASK_DECODERS: dict[str, type[MaskDecoder]] = {
    "binary": BinaryMask,
    "grey": GreyMask,
    "index": IndexMask,
    "palette": PaletteMask,
}
_ALIASES = {"gray": "grey"}


def build_mask_decoder(spec: MaskDecoder | dict[str, Any] | str) -> MaskDecoder:
    """A decoder from config: ``"binary"``, ``{"type": "palette", "colors": [[0, 0, 255], ...]}``,
    ``{"type": "grey", "values": [33, 65, 201, 231]}``, ``{"type": "index", "num_classes": 11,
    "ignore_index": 11}``. Unknown types or options are a ConfigurationError listing valid ones.
    """
    if isinstance(spec, MaskDecoder):
        return spec
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigurationError(
            f"a mask decoder is a type name or a mapping with a 'type' key; got {spec!r}"
        )
    options = dict(spec)
    name = str(options.pop("type"))
    name = _ALIASES.get(name.lower(), name.lower())
    if name not in MASK_DECODERS:
        raise unknown_choice("mask decoder type", str(spec["type"]), list(MASK_DECODERS))
    cls = MASK_DECODERS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"{name} mask decoder: unknown option(s) {', '.join(unknown)}; valid options: "
            f"{', '.join(accepted)}"
        )
    try:
        return cls(**options)
    except TypeError as error:  # a required option missing
        raise ConfigurationError(f"{name} mask decoder: {error}") from None
