"""Every registered network: listed with its cost, and trainable end to end through the CLI."""

from __future__ import annotations

import json

import pytest

from lightning_seg.cli import run_cli
from lightning_seg.entry import main
from lightning_seg.models import MODELS
from lightning_seg.models.summary import model_table

# Small widths so each fit takes seconds; every registered network must appear here.
SMALL_ARGS: dict[str, dict] = {
    "unet": {"depth": 2, "base_channels": 4},
    "unet_upsample": {"depth": 2, "base_channels": 4},
    "unet_convpool": {"depth": 2, "base_channels": 4},
    "segnet": {"base_channels": 4},
    "segnet_upsample": {"base_channels": 4},
    "pspnet": {"base_channels": 8, "layers": [1, 1, 1, 1]},
    "smp": {"arch": "Unet", "encoder_name": "resnet18", "encoder_weights": None},
    "ensemble": {
        "members": [
            {"model": "unet", "depth": 2, "base_channels": 4},
            {"model": "segnet", "base_channels": 4},
        ]
    },
}


def test_every_registered_network_has_a_fit_test():
    assert set(MODELS) <= set(SMALL_ARGS), "add the new network to SMALL_ARGS"


def test_models_command_lists_every_network_with_parameters_and_flops(capsys):
    main(["models", "--size", "64"])
    out = capsys.readouterr().out
    for name in MODELS:
        assert f"\n{name} " in out
    rows = {r["model"]: r for r in model_table(["unet"], size=64)}
    # U-Net at 64 px costs 1/16 of 256 px: FLOPs scale with the pixel count.
    at_256 = model_table(["unet"], size=256)[0]["gflops"]
    assert rows["unet"]["gflops"] == pytest.approx(at_256 / 16, rel=1e-3)
    assert rows["unet"]["parameters"] > 1_000_000


@pytest.mark.parametrize("name", sorted(SMALL_ARGS))
@pytest.mark.parametrize("lesion_classes", [1, 2])
def test_short_fit_on_synthetic_data(name, lesion_classes, tmp_path):
    if name not in MODELS:
        pytest.skip(f"{name} is not registered")
    loss = "bce+dice" if lesion_classes == 1 else "ce+dice"
    cli = run_cli(
        [
            "fit",
            "--experiment=quickstart",
            f"--runs_dir={tmp_path}",
            "--trainer.logger=false",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--data.init_args.size=64",
            "--data.init_args.num_train=8",
            "--data.init_args.num_val=4",
            "--data.init_args.batch_size=4",
            f"--data.init_args.num_lesion_classes={lesion_classes}",
            f"--model.model={name}",
            f"--model.model_args={json.dumps(SMALL_ARGS[name])}",
            f"--model.loss={loss}",
        ]
    )
    assert cli.trainer.global_step == 2
    assert "val/iou" in cli.trainer.callback_metrics
