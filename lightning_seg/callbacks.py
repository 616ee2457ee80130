"""Callbacks that observe the task: the end-of-fit summary and the config sent to the logger."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import yaml
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback

from lightning_seg.tracking import flatten


class BestCheckpoint(ModelCheckpoint):
    """Keeps the single best checkpoint by validation IoU."""

    def __init__(self, dirpath: Path, monitor: str = "val/iou") -> None:
        super().__init__(
            dirpath=dirpath,
            filename="epoch={epoch:03d}-val_iou={" + monitor + ":.4f}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode="max",
            save_top_k=1,
        )


class LastCheckpoint(ModelCheckpoint):
    """Overwrites ``last.ckpt`` after every epoch, improved or not, for resuming.

    (Lightning's ``save_last`` only refreshes it when a top-k checkpoint was saved.)
    """

    def __init__(self, dirpath: Path) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        )


class RunSummary(Callback):
    """Records the outcome of ``fit`` in ``summary.json`` and as one line for people and scripts."""

    def __init__(self, run_dir: Path, experiment: str, monitor: str = "val/iou") -> None:
        self.run_dir = Path(run_dir)
        self.experiment = experiment
        self.monitor = monitor
        self.summary: dict[str, Any] = {}
        self._start = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_score", None)
        if best is None:  # no checkpointing (fast_dev_run): fall back to the last value
            best = trainer.callback_metrics.get(self.monitor)
        best_path = getattr(checkpoint, "best_model_path", "") or ""
        self.summary = {
            "experiment": self.experiment,
            self.monitor: float(best) if best is not None else math.nan,
            "best_checkpoint": best_path,
            "last_checkpoint": next(
                (
                    c.best_model_path
                    for c in trainer.checkpoint_callbacks
                    if isinstance(c, LastCheckpoint)
                ),
                "",
            ),
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "wall_time_s": round(time.perf_counter() - self._start, 2),
            "run_dir": str(self.run_dir),
            "num_parameters": sum(p.numel() for p in pl_module.parameters()),
        }
        if trainer.is_global_zero and not trainer.fast_dev_run:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")

    def line(self) -> str:
        """``fit done: val/iou=0.8712 best_checkpoint=... run_dir=...``"""
        score = self.summary.get(self.monitor, math.nan)
        return (
            f"fit done: {self.monitor}={score:.4f} "
            f"best_checkpoint={self.summary.get('best_checkpoint') or 'none'} "
            f"run_dir={self.summary.get('run_dir', self.run_dir)}"
        )


class LoggedConfig(SaveConfigCallback):
    """Saves ``config.yaml`` in the run folder and sends the whole resolved config to the logger
    as flat, readable keys (``model.loss``, ``data.batch_size``, ``trainer.max_epochs``)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.logger is None:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config.pop("config", None)  # the paths of the YAML files, not settings
        flat = flatten(config)
        flat["num_parameters"] = sum(p.numel() for p in pl_module.parameters())
        trainer.logger.log_hyperparams(flat)
