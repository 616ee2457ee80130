"""Prediction throughput on PH2-sized images (about 765 x 572 RGB): images/s with and without TTA.

    .venv/bin/python benchmarks/predict.py                    # trains a quickstart-sized U-Net
    .venv/bin/python benchmarks/predict.py --ckpt runs/.../last.ckpt --images 16

Without ``--ckpt`` a quickstart-sized U-Net (depth 3, 16 base channels) is trained for a couple of
steps on 256 x 256 synthetic images: throughput does not depend on how well it learnt. Images
are real PH2 dermoscopy images from ``../shared/data/ph2`` when present, random ones of the same
size otherwise. Each row is one way of running ``predict``: resizing to the training size (the
default for a model trained on resized images) or a sliding window of training-size tiles at full
resolution, each without TTA and with ``flips`` (4 passes). "end to end" times
:func:`predict_files` (decode, predict, encode and write the PNG masks); "predict only" times
:meth:`Predictor.predict_mask` on decoded images. Writes ``benchmarks/results/predict.md`` and
``.json`` and prints the table. It measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import numpy as np
import torch
from common import machine  # benchmarks/common.py: scripts run from their folder
from PIL import Image

from lightning_seg.data.io import read_image
from lightning_seg.inference import Predictor, predict_files

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PH2 = ROOT.parent / "shared" / "data" / "ph2"
PH2_SIZE = (572, 765)  # height, width of a typical PH2 image


def train_checkpoint(folder: Path) -> Path:
    """A quickstart-sized U-Net trained for two steps on 256 x 256 synthetic images."""
    from lightning_seg.entry import main

    main(
        [
            "fit",
            "--experiment=quickstart",
            f"--runs_dir={folder}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--data.init_args.size=256",
            "--data.init_args.num_train=8",
            "--data.init_args.num_val=4",
            "--data.init_args.batch_size=4",
            "--model.model_args.depth=3",
            "--model.model_args.base_channels=16",
        ]
    )
    return next(folder.rglob("last.ckpt"))


def input_images(folder: Path, count: int) -> tuple[list[Path], str]:
    """``count`` PH2 images if the shared data is there, else random PH2-sized PNGs."""
    real = sorted(PH2.glob("**/*_Dermoscopic_Image/*.png"))[:count] if PH2.is_dir() else []
    if len(real) == count:
        return real, "PH2 dermoscopy images from ../shared/data/ph2"
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"random_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (*PH2_SIZE, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths, f"random {PH2_SIZE[1]} x {PH2_SIZE[0]} RGB images"


def measure(
    ckpt: Path,
    files: list[Path],
    output: Path,
    sliding: bool,
    tta: str,
    batch_size: int,
    repeat: int = 2,
) -> dict[str, float | str]:
    predictor = Predictor(
        ckpt, device="cpu", tta=tta, sliding_window=sliding, batch_size=batch_size
    )
    images = [read_image(path, predictor.in_channels) for path in files]
    predictor.predict_mask(images[0])  # warm-up: the first call sets up oneDNN kernels
    predict_only = float("inf")
    for _ in range(repeat):  # best of ``repeat``: other processes only ever slow a run down
        start = time.perf_counter()
        for image in images:
            predictor.predict_mask(image)
        predict_only = min(predict_only, time.perf_counter() - start)
    start = time.perf_counter()
    report = predict_files(predictor, files, output, progress=False)
    end_to_end = time.perf_counter() - start
    assert len(report.written) == len(files), report.skipped
    tiles = "-"
    if sliding:
        (th, tw), (sy, sx) = predictor.tile, predictor.steps
        height, width = images[0].shape[:2]
        count_y = 1 if height <= th else -(-(height - th) // sy) + 1
        count_x = 1 if width <= tw else -(-(width - tw) // sx) + 1
        tiles = f"{count_y * count_x} of {th}x{tw}"
    return {
        "mode": "sliding window" if sliding else "resize",
        "tta": tta,
        "tiles_per_image": tiles,
        "images": len(files),
        "end_to_end_images_per_s": len(files) / end_to_end,
        "predict_only_images_per_s": len(files) / predict_only,
    }


def table(rows: list[dict], header: list[str]) -> str:
    lines = [
        *header,
        "",
        "| mode | TTA | tiles per image | images | end to end (images/s) "
        "| predict only (images/s) |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['mode']} | {row['tta']} | {row['tiles_per_image']} | {row['images']} | "
            f"{row['end_to_end_images_per_s']:.2f} | {row['predict_only_images_per_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, help="checkpoint (default: train a quick one)")
    parser.add_argument("--images", type=int, default=6, help="images per measurement")
    parser.add_argument("--tta", nargs="+", default=["none", "flips"])
    parser.add_argument(
        "--modes", nargs="+", choices=["resize", "sliding"], default=["resize", "sliding"]
    )
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--repeat", type=int, default=2, help="predict-only timing: best of N")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="folder for predict.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = args.ckpt or train_checkpoint(work / "runs")
        files, source = input_images(work, args.images)
        rows = [
            measure(
                ckpt, files, work / "masks", mode == "sliding", tta, args.batch_size, args.repeat
            )
            for mode in args.modes
            for tta in args.tta
        ]
        settings = Predictor(ckpt, device="cpu").settings
    header = [
        "# Prediction throughput",
        "",
        f"- machine: {machine()}",
        f"- checkpoint: {'given: ' + str(args.ckpt) if args.ckpt else 'quickstart-sized U-Net'}"
        f" ({settings['model']}, training size {list(settings['preprocessing'].image_size)})",
        f"- images: {source}",
        "- TTA `flips`: identity, horizontal, vertical and both flips (4 passes)",
        f"- predict only: best of {args.repeat}; end to end: one pass (decode, predict, write)",
    ]
    markdown = table(rows, header)
    print(markdown)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "predict.md").write_text(markdown)
    (args.output / "predict.json").write_text(
        json.dumps({"machine": machine(), "images": source, "rows": rows}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
