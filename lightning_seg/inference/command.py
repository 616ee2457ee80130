"""``lightning-seg predict --input ...``: the argparse front of :func:`predict_files`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home


from lightning_seg.data.io import DEFAULT_MAX_PIXELS
from lightning_seg.errors import ConfigurationError
from lightning_seg.inference.predictor import Predictor
from lightning_seg.inference.writing import collect_inputs, predict_files
from lightning_seg.tta import TTA_VIEWS


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--ckpt_path`` as every command spells it, ``--ckpt`` kept as an alias."""
    parser.add_argument(
        "--ckpt_path",
        "--ckpt",
        dest="ckpt",
        required=True,
        help="checkpoint (.ckpt) written by fit (--ckpt is an alias)",
    )


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg predict",
        description="Write one PNG mask per input image, at the image's own resolution: 0/255 "
        "for binary models, class ids for multiclass. Unreadable inputs are skipped, listed at "
        "the end and make the exit status 1. Inputs are never overwritten: an --output folder "
        "that holds inputs is refused.",
    )
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        help="image files and/or folders (a folder's image files, not recursive)",
    )
    parser.add_argument("--output", required=True, help="folder for <stem>.png masks")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="binary foreground threshold (default: the checkpoint's, possibly tuned)",
    )
    parser.add_argument(
        "--overlay", action="store_true", help="also write colour overlays to <output>/overlays/"
    )
    parser.add_argument(
        "--tta",
        choices=list(TTA_VIEWS),
        default=None,
        help="test-time augmentation averaged in probability space (flips: id, h, v, hv; "
        "d4: the flips and their transposes, all 8 right-angle symmetries; flips_scales: the "
        "flips at 7/8, 1 and 9/8 of the input size); default: the "
        "checkpoint's model.tta, which test scored with",
    )
    parser.add_argument(
        "--sliding-window",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tiles at full resolution (--sliding-window) or resize to the training size "
        "(--no-sliding-window); default: as the model was trained (tiles for tiled training, "
        "resize for resized images; if unknown, tiles for images > 2x the training size)",
    )
    parser.add_argument(
        "--tile", type=int, nargs=2, metavar=("H", "W"), help="tile size (default: training size)"
    )
    parser.add_argument(
        "--overlap", type=float, default=0.5, help="fraction of a tile shared with neighbours"
    )
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:0")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images with more pixels (decompression-bomb guard; default %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _notices(settings: dict[str, Any]) -> Iterator[str]:
    sources, preprocessing = settings["sources"], settings["preprocessing"]
    if sources["normalisation"].startswith("default"):
        yield (
            f"note: the checkpoint does not record its normalisation; using "
            f"{sources['normalisation']} mean {list(preprocessing.mean)} / std "
            f"{list(preprocessing.std)}"
        )
    if sources["image_size"] == "default":
        size = list(preprocessing.image_size)
        yield f"note: the checkpoint does not record its image size; using {size}"


def predict_command(argv: list[str]) -> int:
    """``lightning-seg predict``: 0 when every input was predicted, 1 when some were skipped.

    Configuration problems (missing or unsafe checkpoint, bad options, an output folder that
    holds inputs) raise :class:`ConfigurationError`, which the CLI prints as one line.
    """
    args = predict_parser().parse_args(argv)
    predictor = Predictor(
        args.ckpt,
        device=args.device,
        tta=args.tta,
        sliding_window=args.sliding_window,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        threshold=args.threshold,
    )
    files, ignored = collect_inputs(args.input)
    if not files:
        raise ConfigurationError(f"no image files in {' '.join(args.input)}")
    for line in _notices(predictor.settings):
        print(line, file=sys.stderr)
    output = Path(args.output)
    report = predict_files(
        predictor, files, output, args.overlay, args.max_pixels, progress=not args.no_progress
    )
    if ignored:
        print(f"ignored {len(ignored)} file(s) without an image suffix in the input folders")
    print(f"wrote {len(report.written)} mask(s) to {output}")
    if report.skipped:
        lines = "\n".join(f"  {error}" for error in report.skipped)
        print(f"skipped {len(report.skipped)} unreadable input(s):\n{lines}", file=sys.stderr)
        return 1
    return 0
