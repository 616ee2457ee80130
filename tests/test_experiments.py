"""Every named experiment runs: ``fit --trainer.fast_dev_run=true`` on the real data in
../shared/data (Carvana on generated files), as ``make train EXP=<name>`` would."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_seg.cli import run_cli
from lightning_seg.experiments import available_experiments

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# The documented offline fallback: no network here to download ImageNet weights.
OFFLINE = {"smp_unet_resnext50": ["--model.model_args.encoder_weights=null"]}
SYNTHETIC = {"quickstart"}
# One step of the full-resolution CamVid networks (352 x 480) costs 15-30 s on 2 cores; the
# input size is not what this test protects (the config, the data and the loss wiring are).
SMALLER = {name: ["--data.init_args.image_size=[160,224]"]
           for name in ("segnet_camvid", "pspnet_camvid")}  # fmt: skip


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")  # decode PH2 once for all its experiments


def test_every_experiment_is_covered():
    assert set(available_experiments()) >= {
        "segnet_bce", "segnet_dice", "segnet_focal", "segnet_wsr", "unet_bce",
        "unet_upsample_bce", "unet_convpool_bce", "unet_boundary", "smp_unet_resnext50",
        "smp_unet_effl0", "smp_unet_effl2", "pspnet_camvid", "segnet_camvid", "unet_sandstone",
        "unet_carvana",
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(set(available_experiments()) - {"unet_carvana"}))
def test_experiment_fast_dev_run(name, tmp_path, shared_cache, monkeypatch):
    data = Path(__import__("os").environ.get("LIGHTNING_SEG_DATA", SHARED))
    if name not in SYNTHETIC and not data.is_dir():
        pytest.skip(f"shared datasets not found at {data} (set LIGHTNING_SEG_DATA)")
    monkeypatch.setenv("LIGHTNING_SEG_DATA", str(data))
    monkeypatch.setenv("LIGHTNING_SEG_CACHE", str(shared_cache))
    cli = run_cli(["fit", f"--experiment={name}", f"--runs_dir={tmp_path}",
                "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false",
                "--data.init_args.batch_size=2", *OFFLINE.get(name, []),
                *SMALLER.get(name, [])])  # fmt: skip
    assert cli.trainer.global_step == 1


def test_carvana_experiment_on_generated_files(tmp_path, monkeypatch):
    from tests.data.test_generated import make_carvana

    make_carvana(tmp_path / "data" / "carvana", cars=6, views=2)
    monkeypatch.setenv("LIGHTNING_SEG_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LIGHTNING_SEG_CACHE", str(tmp_path / "cache"))
    cli = run_cli(["fit", "--experiment=unet_carvana", f"--runs_dir={tmp_path}",
                "--trainer.fast_dev_run=true", "--data.init_args.image_size=[64,96]",
                "--data.init_args.train_crop=[32,48]", "--data.init_args.num_workers=0",
                "--model.model_args.base_channels=8"])  # fmt: skip
    assert cli.trainer.global_step == 1
