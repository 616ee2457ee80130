"""Loss registry and composition: ``"bce"``, ``"bce+dice"`` or a weighted list.

Every loss is called as ``loss(logits, target, weight=None)``: logits N x C x H x W,
target N x H x W class ids (``ignore_index`` where unlabelled) and an optional per-pixel weight map.

A loss spec in YAML is one of::

    loss: bce
    loss: bce+dice
    loss:
      - {name: bce, weight: 0.5, pos_weight: 3.0}
      - {name: dice, weight: 1.0}
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Literal

from torch import Tensor, nn

from lightning_seg.errors import ConfigurationError, unknown_choice
from lightning_seg.losses.boundary import BoundaryBCELoss, BoundaryCELoss
from lightning_seg.losses.focal import FocalLoss
from lightning_seg.losses.pixelwise import BCELoss, CrossEntropyLoss
from lightning_seg.losses.region import DiceLoss, LovaszLoss, TverskyLoss
from lightning_seg.losses.wsr import WSRLoss

Mode = Literal["binary", "multiclass"]
LossSpec = str | list[dict[str, Any]]

LOSSES: dict[str, Callable[..., nn.Module]] = {
    "bce": BCELoss,
    "ce": CrossEntropyLoss,
    "dice": DiceLoss,
    "focal": FocalLoss,
    "tversky": TverskyLoss,
    "lovasz": LovaszLoss,
    "wsr": WSRLoss,
    "boundary_bce": BoundaryBCELoss,
    "boundary_ce": BoundaryCELoss,
}


class WeightedSum(nn.Module):
    """Sum of named losses, each with a weight, e.g. ``0.5 * bce + 1.0 * dice``."""

    def __init__(self, terms: dict[str, nn.Module], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        return sum(
            self.weights[name] * term(logits, target, weight) for name, term in self.terms.items()
        )  # type: ignore[return-value]


def parse_spec(spec: LossSpec) -> list[dict[str, Any]]:
    """Normalise a loss spec to a list of ``{"name", "weight", **kwargs}`` dicts."""
    if isinstance(spec, str):
        names = [part.strip() for part in spec.split("+") if part.strip()]
        if not names:
            raise ConfigurationError(f"empty loss spec {spec!r}")
        return [{"name": name, "weight": 1.0} for name in names]
    terms = []
    for item in spec:
        if "name" not in item:
            raise ConfigurationError(f"each loss in a list needs a 'name'; got {item!r}")
        terms.append({"weight": 1.0, **item})
    return terms


def build_single(name: str, mode: Mode, ignore_index: int | None, **kwargs: Any) -> nn.Module:
    """Build one registered loss for ``mode``, passing only the arguments it accepts."""
    if name not in LOSSES:
        raise unknown_choice("loss", name, list(LOSSES))
    factory = LOSSES[name]
    modes = getattr(factory, "modes", ("binary", "multiclass"))
    if mode not in modes:
        hint = {
            "bce": " (use 'ce' for multiclass)",
            "ce": " (use 'bce' for binary)",
            "boundary_bce": " (use 'boundary_ce' for multiclass)",
            "boundary_ce": " (use 'boundary_bce' for binary)",
        }.get(name, "")
        raise ConfigurationError(f"loss {name!r} does not support {mode} segmentation{hint}")
    params = inspect.signature(factory).parameters
    unknown = set(kwargs) - set(params)
    if unknown:
        valid = sorted(p for p in params if p not in ("mode", "ignore_index"))
        raise ConfigurationError(
            f"loss {name!r} got unknown arguments {sorted(unknown)}; it accepts {valid}"
        )
    if "mode" in params:
        kwargs["mode"] = mode
    return factory(ignore_index=ignore_index, **kwargs)


def build_loss(spec: LossSpec, mode: Mode, ignore_index: int | None = None) -> nn.Module:
    """Build the loss described by ``spec`` for binary or multiclass segmentation."""
    terms, weights = {}, {}
    for item in parse_spec(spec):
        kwargs = {k: v for k, v in item.items() if k not in ("name", "weight")}
        key = item["name"]
        while key in terms:  # the same loss twice with different arguments
            key += "_"
        terms[key] = build_single(item["name"], mode, ignore_index, **kwargs)
        weights[key] = float(item["weight"])
    if len(terms) == 1 and next(iter(weights.values())) == 1.0:
        return next(iter(terms.values()))
    return WeightedSum(terms, weights)


__all__ = [
    "LOSSES",
    "LossSpec",
    "WeightedSum",
    "build_loss",
    "parse_spec",
]
