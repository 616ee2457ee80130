"""``lightning-seg predict --input ...``: the argparse front of :func:`predict_files`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home


from lightning_seg.errors import ConfigurationError
from lightning_seg.inference.predictor import Predictor
from lightning_seg.inference.writing import collect_inputs, predict_files
from lightning_seg.parsers import predict_parser


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
