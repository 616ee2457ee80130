"""Callbacks that observe the task: the end-of-fit summary and the config sent to the logger."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from lightning_seg.errors import ConfigurationError
from lightning_seg.experiments import flatten, network_label
from lightning_seg.postprocess import postprocess_labels
from lightning_seg.tracking import git_commit


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
        # A resumed run continues its clock and history (restored by load_state_dict).
        self._start = time.perf_counter() - getattr(self, "_elapsed", 0.0)
        self.history: list[dict[str, float]] = getattr(self, "_restored_history", [])

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint, so that a resumed run's summary holds the whole history."""
        elapsed = time.perf_counter() - self._start if self._start else 0.0
        return {"history": list(getattr(self, "history", [])), "elapsed": elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_history = list(state_dict.get("history", []))
        self._elapsed = float(state_dict.get("elapsed", 0.0))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before
        # the module's, which logs the epoch's metrics; by now they are in callback_metrics.
        if trainer.sanity_checking:
            return
        row: dict[str, float] = {
            "epoch": trainer.current_epoch,
            "time_s": round(time.perf_counter() - self._start, 2),  # wall clock since fit began
        }
        for name, value in trainer.callback_metrics.items():
            if name.startswith("val/"):
                row[name] = float(value)
        self.history.append(row)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # teardown, not on_fit_end: it runs after every callback's on_fit_end (threshold tuning).
        if stage == "fit":
            self.summarise(trainer, pl_module)

    def summarise(self, trainer: Trainer, pl_module: LightningModule) -> None:
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
            "model": pl_module.hparams.get("model"),
            "network": network_label(
                pl_module.hparams.get("model"), pl_module.hparams.get("model_args")
            ),
            "dataset": getattr(trainer.datamodule, "name", None),
            "loss": pl_module.hparams.get("loss"),
            "history": getattr(self, "history", []),
        }
        scored = [row for row in self.summary["history"] if self.monitor in row]
        if scored:  # the other validation metrics of the best epoch
            best_row = max(scored, key=lambda row: row[self.monitor])
            self.summary.update({k: v for k, v in best_row.items() if k != self.monitor})
            self.summary["best_epoch"] = best_row["epoch"]
        if pl_module.hparams.get("num_classes") == 1:
            self.summary["threshold"] = pl_module.hparams.get("threshold")
            self.summary["tta"] = pl_module.hparams.get("tta", "none")
            tuner = next((c for c in trainer.callbacks if isinstance(c, ThresholdTuner)), None)
            if tuner is not None and tuner.iou is not None:
                # What test and predict with the best checkpoint will use and (on val) give.
                self.summary["val/iou_at_0.5"] = tuner.iou_at_half
                self.summary["val/iou_tuned"] = tuner.iou
        if trainer.is_global_zero and not trainer.fast_dev_run:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")

    def line(self) -> str:
        """``fit done: val/iou=0.8712 best_checkpoint=... run_dir=...``"""
        score = self.summary.get(self.monitor, math.nan)
        tuned = ""
        if "val/iou_tuned" in self.summary:
            threshold, iou = self.summary["threshold"], self.summary["val/iou_tuned"]
            views = self.summary.get("tta", "none")
            # Two different measurements: say which is which.
            tuned = (
                f"(best epoch, at 0.50, one view; test, validate and predict use threshold "
                f"{threshold:.2f} and tta={views}: val/iou_tuned={iou:.4f}) "
            )
        return (
            f"fit done: {self.monitor}={score:.4f} {tuned}"
            f"best_checkpoint={self.summary.get('best_checkpoint') or 'none'} "
            f"run_dir={self.summary.get('run_dir', self.run_dir)}"
        )


class LoggedConfig(SaveConfigCallback):
    """Saves ``config.yaml`` in the run folder and sends the whole resolved config to the logger
    as flat, readable keys (``model.loss``, ``data.batch_size``, ``trainer.max_epochs``)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # config.yaml belongs to the fit that made the run folder: evaluations and resumed fits
        # (which run in that folder) leave it as it is, and evaluations of loose checkpoints
        # write none, so a folder with a config.yaml is a fit run (run names count them).
        log_dir = trainer.log_dir
        exists = bool(log_dir) and (Path(log_dir) / self.config_filename).is_file()
        if stage != "fit" or exists:
            self.save_to_log_dir = False
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.logger is None:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        config.pop("config", None)  # the paths of the YAML files, not settings
        flat = flatten(config)
        flat["num_parameters"] = sum(p.numel() for p in pl_module.parameters())
        flat["git_commit"] = git_commit()
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "fingerprint"):
            flat["dataset"] = datamodule.name
            flat["dataset_fingerprint"] = datamodule.fingerprint()
        trainer.logger.log_hyperparams(flat)
        if isinstance(trainer.logger, WandbLogger):
            # The run's summary keeps the best value, not the last, so the runs table and
            # parallel-coordinates charts compare runs by their best epoch.
            run = trainer.logger.experiment
            for name in ("val/iou", "val/f1", "val/iou_per_image"):
                run.define_metric(name, summary="max")
            run.define_metric("val/loss", summary="min")


def check_tuning_data(datamodule: Any) -> None:
    """Refuse to tune a threshold on validation images that training also draws from
    (``data.train_splits: [train, val]``): the chosen threshold would fit the training set."""
    if "val" in getattr(datamodule, "train_splits", ()):
        raise ConfigurationError(
            "model.tune_threshold: data.train_splits includes val, so the threshold would "
            "be tuned on images the network trained on; set model.threshold (for example "
            "the one a fit on train alone tuned) and model.tune_threshold: false"
        )


class ThresholdTuner(Callback):
    """Chooses the binary threshold that maximises validation IoU, once, at the end of ``fit``.

    It evaluates the best checkpoint (the weights that ``test`` and ``predict`` will use) on the
    validation set, counts foreground and background pixels in ``bins`` probability bins, and
    reads TP, FP and FN at every threshold ``k / bins`` from cumulative sums: one pass over the
    data for all thresholds. With post-processing (``largest_component``) the labels are scored
    after it, at thresholds 0.05 .. 0.95, since removing regions changes TP/FP/FN per threshold.
    The chosen threshold is written into the best and last checkpoints'
    hyper-parameters, so a later ``test`` or ``predict`` with either checkpoint uses it.
    """

    def __init__(self, bins: int = 100) -> None:
        self.bins = bins
        self.threshold: float | None = None
        self.iou: float | None = None
        self.iou_at_half: float | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            check_tuning_data(trainer.datamodule)

    def validation_batches(self, trainer: Trainer, pl_module: LightningModule):
        """(probabilities, mask, valid) of every validation batch, as ``test`` will see them."""
        ignore_index = pl_module.hparams.get("ignore_index")
        pl_module.eval()
        for batch in trainer.datamodule.val_dataloader():
            # The probabilities `test` will threshold: with its test-time views, if any, and at
            # its precision (bf16 autocast under bf16-mixed; on_fit_end runs outside it).
            with trainer.precision_plugin.forward_context():
                probs = pl_module.probabilities(batch["image"].to(pl_module.device))[:, 0]
            probs = probs.float()
            mask = batch["mask"].to(pl_module.device)
            valid = (
                mask != ignore_index
                if ignore_index is not None
                else torch.ones_like(mask, dtype=torch.bool)
            )
            yield probs, mask, valid

    @torch.inference_mode()
    def histogram_iou(self, trainer: Trainer, pl_module: LightningModule) -> tuple[Tensor, Tensor]:
        """Thresholds k / bins (k >= 1) and the pooled IoU at each, from one pass of counts."""
        fg = torch.zeros(self.bins, dtype=torch.float64, device=pl_module.device)
        bg = torch.zeros_like(fg)
        for probs, mask, valid in self.validation_batches(trainer, pl_module):
            index = (probs * self.bins).long().clamp_(0, self.bins - 1)
            fg += torch.bincount(index[valid & (mask == 1)], minlength=self.bins)
            bg += torch.bincount(index[valid & (mask == 0)], minlength=self.bins)
        # Foreground predicted at threshold k / bins: every pixel in bins k .. bins-1.
        tp = fg.flip(0).cumsum(0).flip(0)
        fp = bg.flip(0).cumsum(0).flip(0)
        fn = fg.sum() - tp
        iou = tp / (tp + fp + fn).clamp_min(1)
        # Threshold 0 would call every pixel foreground.
        return torch.arange(1, self.bins, dtype=torch.float64) / self.bins, iou[1:].cpu()

    @torch.inference_mode()
    def postprocessed_iou(
        self, trainer: Trainer, pl_module: LightningModule, method: str
    ) -> tuple[Tensor, Tensor]:
        """Pooled IoU at thresholds 0.05 .. 0.95 of the post-processed labels: post-processing
        is not monotonic in the threshold, so each one is scored on the labels ``test`` uses."""
        thresholds = torch.arange(1, 20, dtype=torch.float64) / 20
        counts = torch.zeros(len(thresholds), 3, dtype=torch.float64)  # tp, fp, fn
        for probs, mask, valid in self.validation_batches(trainer, pl_module):
            truth = (mask == 1) & valid
            for i, threshold in enumerate(thresholds.tolist()):
                labels = postprocess_labels((probs > threshold).long(), method) == 1
                counts[i, 0] += (labels & truth).sum().item()
                counts[i, 1] += (labels & ~truth & valid).sum().item()
                counts[i, 2] += (~labels & truth).sum().item()
        return thresholds, counts[:, 0] / counts.sum(dim=1).clamp_min(1)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run or trainer.datamodule is None:
            return
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if best:
            state = torch.load(best, weights_only=True, map_location=pl_module.device)
            pl_module.load_state_dict(state["state_dict"])
        method = pl_module.hparams.get("postprocess", "none")
        if method == "none":
            thresholds, iou = self.histogram_iou(trainer, pl_module)
        else:
            thresholds, iou = self.postprocessed_iou(trainer, pl_module, method)
        k = int(iou.argmax())
        self.threshold, self.iou = round(float(thresholds[k]), 4), float(iou[k])
        self.iou_at_half = float(iou[int((thresholds - 0.5).abs().argmin())])
        pl_module.hparams["threshold"] = self.threshold
        rank_zero_info(
            f"tuned binary threshold: {self.threshold:.2f} (val/iou {self.iou:.4f} with the best "
            f"checkpoint, {self.iou_at_half:.4f} at 0.50)"
        )
        if trainer.logger is not None:
            trainer.logger.log_metrics({"val/threshold": self.threshold, "val/iou_tuned": self.iou})
        if trainer.is_global_zero:
            paths = {best, *(c.best_model_path for c in trainer.checkpoint_callbacks)}
            for path in filter(None, paths):
                store_threshold(Path(path), self.threshold)


def store_threshold(path: Path, threshold: float) -> None:
    """Rewrite a checkpoint's ``threshold`` hyper-parameter in place, atomically."""
    state = torch.load(path, weights_only=True, map_location="cpu")
    state["hyper_parameters"]["threshold"] = threshold
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
