"""Data loading throughput for PH2 at 256x256: decoding every file per sample vs the decode-once
cache, next to the training-step throughput of the smallest networks.

    make bench-data          # needs PH2: $LIGHTNING_SEG_DATA/ph2 or ../shared/data/ph2
    .venv/bin/python benchmarks/dataloader.py --root /data/ph2 --epochs 3

Both loaders run in the main process (num_workers=0), so the figures are per-core costs; the
augmentation pipeline is the PH2 default in both. The last line is ``speedup=<cached / uncached>``.
It measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch

from lightning_seg.data import PH2DataModule
from lightning_seg.models import AuxiliaryOutput, build_model

ROOT = Path(__file__).resolve().parents[1]


def default_root() -> Path:
    env = os.environ.get("LIGHTNING_SEG_DATA")
    return Path(env) / "ph2" if env else ROOT.parent / "shared" / "data" / "ph2"


def loader_rate(dm: PH2DataModule, epochs: int) -> float:
    """Images per second through the train DataLoader, over ``epochs`` full passes."""
    dm.setup("fit")
    loader = dm.train_dataloader()
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += len(batch["image"])
    return count / (time.perf_counter() - start)


def train_rate(name: str, args: dict, size: int, batch: int = 8, steps: int = 3) -> float:
    """Images per second of forward + backward + optimizer step, as the task trains."""
    model = build_model(name, 3, 1, **args).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters())
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 2, (batch, 1, size, size)).float()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        output = model(images)
        logits = output.logits if isinstance(output, AuxiliaryOutput) else output
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch / sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=default_root())
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    if not args.root.is_dir():
        raise SystemExit(f"PH2 not found at {args.root}: pass --root or set LIGHTNING_SEG_DATA")

    with tempfile.TemporaryDirectory() as cache_dir:
        os.environ["LIGHTNING_SEG_CACHE"] = cache_dir  # a cold cache: the build is measured too
        common = {"root": str(args.root), "image_size": args.size, "num_workers": 0}
        uncached = loader_rate(PH2DataModule(cache=False, **common), 1)
        dm = PH2DataModule(cache=True, **common)
        start = time.perf_counter()
        dm.prepare_data()
        build = time.perf_counter() - start
        cached = loader_rate(dm, args.epochs)
        pairs = sum(len(p) for p in dm.splits().values())

    smallest = {
        "unet depth 3, width 16 (quickstart)": ("unet", {"depth": 3, "base_channels": 16}),
        "pspnet (default)": ("pspnet", {}),
    }
    steps = {label: train_rate(name, kw, args.size) for label, (name, kw) in smallest.items()}
    print(f"PH2 at {args.size}x{args.size}, {pairs} pairs, train split, num_workers=0, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    print(f"decode every access : {uncached:8.1f} images/s")
    print(f"decode-once cache   : {cached:8.1f} images/s (cache built once in {build:.1f} s)")
    for label, rate in steps.items():
        print(f"train step {label}: {rate:6.1f} images/s")
    print(f"speedup={cached / uncached:.1f}")


if __name__ == "__main__":
    main()
