"""The Python API the README shows: train from a notebook, predict a NumPy image."""

from __future__ import annotations

import numpy as np

import lightning_seg


def test_train_from_python_and_predict_a_numpy_image(tmp_path):
    cli = lightning_seg.train(
        "quickstart",
        "--trainer.enable_progress_bar=false",
        runs_dir=str(tmp_path / "runs"),
        trainer={"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                 "logger": False},
        data={"init_args": {"size": 32, "num_train": 8, "num_val": 4, "batch_size": 4}},
        model={"model_args": {"depth": 2, "base_channels": 4}},
    )  # fmt: skip
    summary = cli.summary.summary
    assert cli.trainer.global_step == 2 and 0.0 <= summary["val/iou"] <= 1.0
    predictor = lightning_seg.Predictor.from_checkpoint(summary["best_checkpoint"])
    image = np.random.default_rng(0).integers(0, 255, (45, 61, 3), dtype=np.uint8)
    mask = predictor.predict_mask(image)
    assert mask.shape == (45, 61) and set(np.unique(mask)) <= {0, 1}


def test_early_stopping_and_the_lr_finder_through_lightning_flags(tiny_fit_args):
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateFinder

    from lightning_seg.cli import run_cli

    # The README's example flags, verbatim.
    cli = run_cli(["fit", *tiny_fit_args, "--trainer.logger=false", "--trainer.max_epochs=6",
                   "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/iou",
                   "--trainer.callbacks.mode=max", "--trainer.callbacks.patience=1",
                   "--trainer.callbacks+=LearningRateFinder",
                   "--trainer.callbacks.num_training_steps=5"])  # fmt: skip
    (stopper,) = [c for c in cli.trainer.callbacks if isinstance(c, EarlyStopping)]
    (finder,) = [c for c in cli.trainer.callbacks if isinstance(c, LearningRateFinder)]
    assert stopper.monitor == "val/iou" and finder.optimal_lr is not None
    assert cli.trainer.current_epoch <= 6
