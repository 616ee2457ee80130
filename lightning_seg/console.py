"""What a run prints: the facts a user needs, one line each, and no third-party chatter.

* Lightning's advertising tip, W&B's start-up banner and its warnings about its own settings,
  and deprecation warnings from inside libraries are dropped; warnings that concern the user's
  data (skipped files, JPEG masks snapped) come from lightning_seg's loggers and still show.
* The model summary is one line (the network and its parameters), not a table whose FLOPs
  column is zeros without an example input.
* When stdout is not a terminal (CI, ``| tee``, a log file), progress is one plain line per
  epoch instead of carriage-return bars.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from typing import Any

from lightning import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.utilities import rank_zero_info

#: Messages of other libraries' loggers that say nothing about the user's run.
NOISE = (
    "💡 Tip:",
    "Trainer already configured with model summary callbacks",
    "Loading `train_dataloader` to estimate number of stepping batches",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(NOISE)


def quiet_libraries() -> None:
    """Silence what third-party libraries print about themselves (idempotent)."""
    os.environ.setdefault("WANDB_SILENT", "true")  # the run's location is printed by us
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch", "lightning_utilities.core.rank_zero"):  # fmt: skip
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*is not supported by the model summary.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # Evaluating or resuming a checkpoint: expected, and about Lightning's internals.
    warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")


class ParameterSummary(ModelSummary):
    """One line: the network's class and its parameters (instead of Lightning's table)."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        network = getattr(pl_module, "network", pl_module)
        total = sum(p.numel() for p in pl_module.parameters())
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        rank_zero_info(
            f"network: {type(network).__name__}, {total / 1e6:.2f} M parameters "
            f"({trainable / 1e6:.2f} M trainable)"
        )


def time_left(seconds: float) -> str:
    """``about 40 s left``, ``about 12 min left``, ``about 1.5 h left``."""
    if seconds < 90:
        return f"about {seconds:.0f} s left"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} min left"
    return f"about {seconds / 3600:.1f} h left"


class EpochLines(ProgressBar):
    """Progress for logs, with the time the rest of the fit should take at this epoch's pace:
    ``epoch 3/40  train/loss 0.312  val/iou 0.8412  val/f1 0.9101  4.1 s  about 3 min left``."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._start = 0.0
        self._fit_start = 0.0
        self._first_epoch = 0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self._first_epoch = trainer.current_epoch  # a resumed fit starts past 0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        metrics = trainer.callback_metrics
        shown = [("train/loss", "train/loss_epoch"), ("val/loss", "val/loss"),
                 ("val/iou", "val/iou"), ("val/f1", "val/f1")]  # fmt: skip
        parts = [f"{label} {float(metrics[key]):.4f}" for label, key in shown if key in metrics]
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        now = time.perf_counter()
        line = f"epoch {trainer.current_epoch + 1}/{total}  " + "  ".join(parts)
        line += f"  {now - self._start:.1f} s"
        done = trainer.current_epoch + 1 - self._first_epoch
        if isinstance(total, int) and done > 0 and trainer.current_epoch + 1 < total:
            pace = (now - self._fit_start) / done  # validation included
            line += f"  {time_left(pace * (total - trainer.current_epoch - 1))}"
        print(line, flush=True)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        pass

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        return {}


def interactive() -> bool:
    """Whether progress bars can redraw in place (stdout is a terminal)."""
    return sys.stdout.isatty()


def console_callbacks(trainer_config: dict[str, Any]) -> list[Any]:
    """A one-line model summary, and plain per-epoch lines where stdout is not a terminal,
    unless the user turned them off or brought their own."""
    user = trainer_config.get("callbacks") or []
    user = user if isinstance(user, list) else [user]
    callbacks: list[Any] = []
    if trainer_config.get("enable_model_summary") is not False and not any(
        isinstance(c, ModelSummary) for c in user
    ):
        callbacks.append(ParameterSummary())
    if (
        not interactive()
        and trainer_config.get("enable_progress_bar") is not False
        and not any(isinstance(c, ProgressBar) for c in user)
    ):
        callbacks.append(EpochLines())
    return callbacks
