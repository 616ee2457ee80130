"""An ensemble of networks trained side by side in one fit, predicting the mean of their logits.

Averaging networks whose errors differ (another encoder, another initialisation) lowers the
variance of the prediction, which is what a small dataset such as PH2 suffers from most. Each
member keeps its own loss on every batch: in training mode the ensemble returns the members'
logits as an :class:`AuxiliaryOutput` (the first as the main head, the rest as auxiliary heads of
weight 1), so the task sums the members' losses without knowing it trains an ensemble and no
member learns to lean on another. In eval mode it returns the mean logits, so validation,
``test``, ``predict`` and export see one network and one checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_seg.errors import ConfigurationError
from lightning_seg.models.base import AuxiliaryOutput

Normalization = tuple[tuple[float, ...], tuple[float, ...]]


def shared_normalization(members: Sequence[nn.Module]) -> Normalization | None:
    """The input normalisation every member with a pretrained encoder asks for (they all get
    the same images), or None when none asks; members that disagree cannot share an input."""
    wanted = {m.input_normalization for m in members if getattr(m, "input_normalization", None)}
    if len(wanted) > 1:
        raise ConfigurationError(
            "model_args.members ask for different input normalisations "
            f"({' vs '.join(f'mean {m} std {s}' for m, s in sorted(wanted))}); an ensemble feeds "
            "every member the same images, so choose encoders trained with the same one"
        )
    return wanted.pop() if wanted else None


class Ensemble(nn.Module):
    """Members built from ``members`` (each ``{model: <registered name>, **its model_args}``).

    Args:
        in_channels, num_classes: passed to every member.
        members: two or more member specs, e.g.
            ``[{model: smp, encoder_name: tu-tf_efficientnet_lite0, ...}, {model: unet}]``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        members: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        from lightning_seg.models import build_model  # the registry imports this module

        super().__init__()
        specs = list(members or [])
        if len(specs) < 2:
            raise ConfigurationError(
                "model_args.members: an ensemble needs two or more members, each "
                "{model: <network name>, ...its model_args}"
            )
        built = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, Mapping):
                raise ConfigurationError(
                    f"model_args.members[{i}]: {spec!r} is not {{model: <network name>, ...}}"
                )
            spec = dict(spec)
            name = spec.pop("model", None)
            if not isinstance(name, str) or name == "ensemble":
                raise ConfigurationError(
                    f"model_args.members[{i}]: needs model: <network name> (not an ensemble), "
                    f"got {name!r}"
                )
            try:
                built.append(build_model(name, in_channels, num_classes, **spec))
            except ConfigurationError as error:  # its own kind: weights that cannot download
                raise type(error)(f"model_args.members[{i}]: {error}") from None
        self.members = nn.ModuleList(built)
        self.input_normalization = shared_normalization(built)
        # Inputs reach every member: a multiple of every member's stride suits them all.
        self.stride = math.lcm(*(int(getattr(m, "stride", 1) or 1) for m in built))

    @property
    def pretrained_encoder(self) -> nn.Module | None:
        """The members' pretrained encoders together (None when no member has one)."""
        encoders = [getattr(m, "pretrained_encoder", None) for m in self.members]
        found = [e for e in encoders if e is not None]
        return nn.ModuleList(found) if found else None

    def forward(self, x: Tensor) -> Tensor | AuxiliaryOutput:
        outputs = [member(x) for member in self.members]
        if not self.training:
            return torch.stack(outputs).mean(dim=0)
        heads: list[tuple[Tensor, float]] = []
        for output in outputs:
            if isinstance(output, AuxiliaryOutput):
                heads.append((output.logits, 1.0))
                heads.extend(output.auxiliary)
            else:
                heads.append((output, 1.0))
        (main, _), *auxiliary = heads
        return AuxiliaryOutput(main, tuple(auxiliary))
