"""Size and cost of the registered networks: parameters and forward FLOPs, for
``lightning-seg models`` and the benchmark."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_seg.models import MODELS, build_model
from lightning_seg.parsers import models_parser

# Arguments that make every registered network buildable here: no weight downloads for a listing.
LISTING_ARGS: dict[str, dict[str, Any]] = {
    "smp": {"encoder_weights": None},
    "ensemble": {"members": [{"model": "unet"}, {"model": "segnet"}]},  # an example pair
}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(model: nn.Module, size: int = 256, in_channels: int = 3) -> int:
    """FLOPs of one forward pass of one image (a multiply-add counts as 2), counted by PyTorch's
    ``FlopCounterMode`` on the real operators rather than estimated from layer shapes."""
    model = model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, in_channels, size, size))
    return counter.get_total_flops()


def describe(name: str) -> str:
    """``UNet(down=maxpool, up=transpose)`` for a preset, the class name otherwise."""
    builder = MODELS[name]
    if isinstance(builder, partial):
        args = ", ".join(f"{k}={v}" for k, v in builder.keywords.items())
        return f"{builder.func.__name__}({args})"
    return getattr(builder, "__name__", type(builder).__name__)


def model_table(names: list[str] | None = None, size: int = 256) -> list[dict[str, Any]]:
    """One row per network: name, what it is, parameters, forward GFLOPs at 3 x size x size."""
    rows = []
    for name in names or list(MODELS):
        model = build_model(name, in_channels=3, num_classes=1, **LISTING_ARGS.get(name, {}))
        rows.append(
            {
                "model": name,
                "builds": describe(name),
                "parameters": count_parameters(model),
                "gflops": forward_flops(model, size) / 1e9,
            }
        )
    return rows


def models_command(argv: list[str]) -> int:
    """``lightning-seg models``: list every registered network and preset with its cost."""
    parser = models_parser()
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; valid choices: {', '.join(MODELS)}")
    rows = model_table(args.names or None, args.size)
    width = max(len(r["builds"]) for r in rows)
    print(f"{'model':<18} {'builds':<{width}} {'params (M)':>10} {f'GFLOPs@{args.size}':>11}")
    for r in rows:
        print(
            f"{r['model']:<18} {r['builds']:<{width}} "
            f"{r['parameters'] / 1e6:>10.2f} {r['gflops']:>11.1f}"
        )
    return 0
