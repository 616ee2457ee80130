"""Training-step throughput of every registered network: forward + backward, images/s.

    make bench-models                      # all networks, 256 x 256, batch 8
    .venv/bin/python benchmarks/models.py --models unet segnet --iters 5
    .venv/bin/python benchmarks/models.py --models segnet --size 192 --batch 4 \
        --model-args '{"base_channels": 16}' --precision bf16-mixed --output /tmp/bench

Writes ``benchmarks/results/models.md`` and ``.json`` and prints the table. ``smp`` is
segmentation-models-pytorch's ``Unet`` with a ``resnet34`` encoder, the model users would otherwise
pick, measured in the same run as the reference. It measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
from common import machine  # benchmarks/common.py: scripts run from their folder

from lightning_seg.models import MODELS, AuxiliaryOutput, build_model
from lightning_seg.models.summary import (
    LISTING_ARGS,
    count_parameters,
    describe,
    forward_flops,
)

RESULTS = Path(__file__).resolve().parent / "results"


def train_step_seconds(
    model: torch.nn.Module,
    batch: int,
    size: int,
    iters: int,
    warmup: int,
    channels_last: bool,
    bf16: bool = False,
) -> float:
    """Median wall time of forward + backward (no optimizer step) on random data; ``bf16``
    runs the forward pass under bf16 autocast, as Lightning's ``bf16-mixed`` does."""
    model.train()
    images = torch.randn(batch, 3, size, size)
    if channels_last:  # as SegmentationTask runs it by default
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            output = model(images)
        loss = output.logits.mean() if isinstance(output, AuxiliaryOutput) else output.mean()
        if isinstance(output, AuxiliaryOutput):
            loss = loss + sum(w * aux.mean() for aux, w in output.auxiliary)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="measure in contiguous (NCHW) memory format instead of the task's channels-last",
    )
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    parser.add_argument(
        "--model-args",
        type=json.loads,
        default=None,
        help="JSON arguments for every listed network (default: the listing's, width 64)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)

    rows = []
    for name in args.models:
        model_args = LISTING_ARGS.get(name, {}) if args.model_args is None else args.model_args
        model = build_model(name, 3, 1, **model_args)
        seconds = train_step_seconds(
            model,
            args.batch,
            args.size,
            args.iters,
            args.warmup,
            args.channels_last,
            bf16=args.precision == "bf16-mixed",
        )
        row = {
            "model": name,
            "builds": describe(name)
            + (" Unet + resnet34 (reference)" if name == "smp" and args.model_args is None else ""),
            "parameters_m": round(count_parameters(model) / 1e6, 2),
            "gflops": round(forward_flops(model, args.size) / 1e9, 1),
            "images_per_s": round(args.batch / seconds, 2),
            "step_s": round(seconds, 3),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    header = (
        f"Forward + backward at {args.size}x{args.size}, batch {args.batch}, median of "
        f"{args.iters} steps after {args.warmup} warm-up, "
        f"{'channels-last' if args.channels_last else 'NCHW'} memory format, "
        f"{args.precision}"
        f"{'' if args.model_args is None else f', model arguments {args.model_args}'}; "
        f"{machine()}."
    )
    table = [
        "| model | builds | params (M) | GFLOPs (fwd, 1 image) | train images/s | step (s) |",
        "|---|---|---:|---:|---:|---:|",
        *(
            f"| `{r['model']}` | {r['builds']} | {r['parameters_m']:.2f} | {r['gflops']:.1f} "
            f"| {r['images_per_s']:.2f} | {r['step_s']:.2f} |"
            for r in rows
        ),
    ]
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "models.md").write_text(header + "\n\n" + "\n".join(table) + "\n")
    (args.output / "models.json").write_text(
        json.dumps({"setup": header, "rows": rows}, indent=2) + "\n"
    )
    print(header)
    print("\n".join(table))


if __name__ == "__main__":
    main()
