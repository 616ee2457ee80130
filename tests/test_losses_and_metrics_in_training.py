"""Losses and metrics wired through the task and CLI: weight maps travel with the batch, metric
names, and the tuned binary threshold stored in checkpoints and used by test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lightning_seg.cli import run_cli
from lightning_seg.data.weight_maps import unet_weight_map
from lightning_seg.task import SegmentationTask
from tests.cli_helpers import short_fit_args


def fit_args(tmp_path: Path, *extra: str) -> list[str]:
    sizes = {"size": 48, "num_train": 32, "num_val": 16, "num_test": None, "batch_size": 8}
    flags = short_fit_args(
        tmp_path, *extra, train_batches=None, val_batches=None, width=8, logger=False, **sizes
    )
    return ["fit", *flags]


def test_boundary_loss_gets_weight_maps_from_the_data_pipeline(tmp_path):
    flags = ["--model.loss=boundary_bce", "--data.init_args.weight_map={w0: 10, sigma: 5}"]
    cli = run_cli(fit_args(tmp_path, "--trainer.max_epochs=1", *flags))
    assert cli.datamodule.weight_map == {"w0": 10.0, "sigma": 5.0}
    sample = cli.datamodule.datasets["train"][3]
    expected = unet_weight_map(sample["mask"].numpy(), 10.0, 5.0)
    np.testing.assert_allclose(sample["weight"].numpy(), expected)
    assert cli.trainer.global_step == 4


def test_boundary_loss_without_weight_maps_is_one_line_before_training(tmp_path, capsys):
    from tests.cli_helpers import exit_status

    assert exit_status(fit_args(tmp_path, "--model.loss=boundary_bce")) == 2
    err = capsys.readouterr().err
    assert "boundary loss needs per-pixel weights: set data.init_args.weight_map" in err
    assert "Traceback" not in err and not (tmp_path / "quickstart").exists()


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
