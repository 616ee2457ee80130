"""Losses and metrics wired through the task and CLI: weight maps travel with the batch, metric
names, and the tuned binary threshold stored in checkpoints and used by test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lightning_seg.cli import run_cli
from lightning_seg.losses.boundary import unet_weight_map
from lightning_seg.task import SegmentationTask


def fit_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--experiment=quickstart",
        f"--runs_dir={tmp_path}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--data.init_args.size=48",
        "--data.init_args.num_train=32",
        "--data.init_args.num_val=16",
        "--data.init_args.batch_size=8",
        "--model.model_args.depth=2",
        "--model.model_args.base_channels=8",
        *extra,
    ]


def test_boundary_loss_gets_weight_maps_from_the_data_pipeline(tmp_path):
    cli = run_cli(fit_args(tmp_path, "--trainer.max_epochs=1", "--model.loss=boundary_bce"))
    assert cli.datamodule.weight_map == {"w0": 10.0, "sigma": 5.0}
    sample = cli.datamodule.datasets["train"][3]
    expected = unet_weight_map(sample["mask"].numpy(), 10.0, 5.0)
    np.testing.assert_allclose(sample["weight"].numpy(), expected)
    assert cli.trainer.global_step == 4


def test_metric_names_binary_and_multiclass(tmp_path):
    cli = run_cli(fit_args(tmp_path / "b", "--trainer.max_epochs=1"))
    assert {"val/iou", "val/f1", "val/iou_per_image"} <= set(cli.trainer.callback_metrics)
    cli = run_cli(
        fit_args(
            tmp_path / "m",
            "--trainer.max_epochs=1",
            "--data.init_args.num_lesion_classes=2",
            "--model.loss=ce",
        )
    )
    names = set(cli.trainer.callback_metrics)
    assert {"val/iou", "val/f1", "val/iou/skin", "val/iou/lesion_1", "val/iou/lesion_2"} <= names


def val_iou_at(task: SegmentationTask, datamodule, thresholds: np.ndarray) -> np.ndarray:
    """Dataset-level val IoU at each threshold, computed here independently with NumPy."""
    task.eval()
    probs, masks = [], []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            probs.append(torch.sigmoid(task(batch["image"]))[:, 0].numpy())
            masks.append(batch["mask"].numpy())
    p, m = np.concatenate(probs).ravel(), np.concatenate(masks).ravel() == 1
    return np.array([((p > t) & m).sum() / max(((p > t) | m).sum(), 1) for t in thresholds])


def test_tuned_threshold_is_stored_in_checkpoints_and_used_by_test(tmp_path):
    cli = run_cli(fit_args(tmp_path, "--trainer.max_epochs=3", "--model.tune_threshold=true"))
    run_dir = next((tmp_path / "quickstart").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    best = Path(summary["best_checkpoint"])
    state = torch.load(best, weights_only=True)
    tuned = state["hyper_parameters"]["threshold"]
    assert summary["threshold"] == tuned
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["hyper_parameters"]["threshold"] == tuned

    # The stored threshold is the best of the grid for the best checkpoint's weights.
    task = SegmentationTask.load_from_checkpoint(best, weights_only=True)
    grid = np.arange(1, 100) / 100
    ious = val_iou_at(task, cli.datamodule, grid)
    assert ious[round(tuned * 100) - 1] >= ious.max() - 1e-6
    assert ious[round(tuned * 100) - 1] >= ious[49]  # at least as good as 0.5

    test_cli = run_cli(
        ["test", *fit_args(tmp_path)[1:], f"--ckpt_path={best}", "--model.tune_threshold=true"]
    )
    assert test_cli.model.hparams["threshold"] == tuned
    assert "test/iou_per_image" in test_cli.trainer.callback_metrics
