"""How tests call the command line in-process, as a shell would see it, and the one set of
flags for a short fit on tiny synthetic data."""

from __future__ import annotations

from pathlib import Path

from lightning_seg.entry import main


def exit_status(argv: list[str]) -> int:
    """The exit status ``lightning-seg *argv`` would end with (argument errors included)."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


def short_fit_args(
    runs_dir: str | Path,
    *extra: str,
    epochs: int = 2,
    train_batches: int | None = 3,
    val_batches: int | None = 2,
    size: int = 32,
    num_train: int = 24,
    num_val: int = 8,
    num_test: int | None = 8,
    batch_size: int | None = 4,
    width: int = 4,
    logger: bool = True,
) -> list[str]:
    """Flags (after the subcommand) for a fit of a few steps of a depth-2 U-Net on synthetic
    images, writing under ``runs_dir``; ``extra`` flags come last and win. ``None`` leaves a
    setting at the experiment's value."""
    flags = [
        "--experiment=quickstart",
        f"--runs_dir={runs_dir}",
        f"--trainer.max_epochs={epochs}",
        *([f"--trainer.limit_train_batches={train_batches}"] if train_batches else []),
        *([f"--trainer.limit_val_batches={val_batches}"] if val_batches else []),
        *([] if logger else ["--trainer.logger=false"]),
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--data.init_args.size={size}",
        f"--data.init_args.num_train={num_train}",
        f"--data.init_args.num_val={num_val}",
        *([f"--data.init_args.num_test={num_test}"] if num_test else []),
        *([f"--data.init_args.batch_size={batch_size}"] if batch_size else []),
        "--model.model_args.depth=2",
        f"--model.model_args.base_channels={width}",
    ]
    return [*flags, *extra]
