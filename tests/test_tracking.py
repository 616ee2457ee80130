"""Runs that compare well: W&B names, groups, tags, configs, best-value summaries, prediction
images and model artifacts; local comparison; offline sync; reproducibility; precision and
compilation; and distributed runs on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_seg.cli import run_cli
from lightning_seg.entry import main
from lightning_seg.runs import offline_runs
from lightning_seg.tracking import new_run_id
from tests.cli_helpers import short_fit_args
from tests.wandb_offline import finished_records, read_offline_run

REPO = Path(__file__).resolve().parents[1]


def args(runs: Path, *extra: str) -> list[str]:
    return short_fit_args(runs, *extra)


def wandb_run(run_dir: Path):
    (run_file,) = run_dir.glob("wandb/offline-run-*/*.wandb")
    return read_offline_run(run_file)


def records(run_dir: Path) -> set[str]:
    (run_file,) = run_dir.glob("wandb/offline-run-*/*.wandb")
    return {record.WhichOneof("record_type") for record in finished_records(run_file)}


def test_wandb_run_is_named_grouped_tagged_and_keeps_best_values(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    main(["fit", *args(runs, "--tracking.log_model=true")])
    monkeypatch.delenv("LIGHTNING_SEG_RUN_ID", raising=False)
    main(["fit", *args(runs)])
    first, second = sorted((runs / "quickstart").iterdir())
    run = wandb_run(first)
    assert run.name == "quickstart" and wandb_run(second).name == "quickstart-2"
    assert run.config["dataset"] == "synthetic" and len(run.config["dataset_fingerprint"]) == 16
    assert run.config["model.model"] == "unet" and run.config["num_parameters"] > 0
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", str(run.config["git_commit"]))
    ious = run.metric("val/iou")
    best = run.summary["val/iou"]
    assert (best["max"] if isinstance(best, dict) else best) == pytest.approx(max(ious))
    # Prediction images with both mask layers and the class labels.
    (images,) = [row for row in run.history if "val/predictions/count" in row][-1:]
    assert images["val/predictions/count"] == 8
    assert images["val/predictions/_type"] == "images/separated"
    assert {"ground_truth", "prediction"} <= set(images["val/predictions/all_masks"][0])
    assert "artifact" in records(first) and "artifact" not in records(second)


def test_run_ids_sort_in_the_order_runs_began_even_within_one_second(monkeypatch):
    ids = []
    for _ in range(20):
        monkeypatch.delenv("LIGHTNING_SEG_RUN_ID", raising=False)
        ids.append(new_run_id())
        time.sleep(0.002)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_group_tags_and_job_type(tmp_path):
    cli = run_cli(["fit", *args(tmp_path, "--trainer.max_epochs=1")])
    logger = cli.trainer.logger
    assert logger._wandb_init["group"] == "synthetic"
    assert logger._wandb_init["job_type"] == "fit"
    assert set(logger._wandb_init["tags"]) == {"model:unet", "loss:bce+dice"}


def test_compare_table_and_plot_with_test_results(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    main(["fit", *args(runs)])
    run_dir = next((runs / "quickstart").iterdir())
    best = json.loads((run_dir / "summary.json").read_text())["best_checkpoint"]
    monkeypatch.delenv("LIGHTNING_SEG_RUN_ID", raising=False)
    main(["test", *args(runs), f"--ckpt_path={best}"])
    capsys.readouterr()
    main(["compare", "quickstart", "--runs_dir", str(runs), "--plot", str(tmp_path / "c.png")])
    out = capsys.readouterr().out
    header, _, row = out.splitlines()[:3]
    for column in ("dataset", "experiment", "model", "loss", "best val IoU", "val F1", "test IoU",
                   "epochs", "params (M)", "wall time"):  # fmt: skip
        assert column in header
    summary = json.loads((run_dir / "summary.json").read_text())
    # The history has every epoch, and the best row is the one the checkpoint kept.
    assert [row["epoch"] for row in summary["history"]] == [0, 1]
    ious = [row["val/iou"] for row in summary["history"]]
    assert summary["val/iou"] == pytest.approx(max(ious))
    best_row = summary["history"][ious.index(max(ious))]
    assert summary["val/f1"] == best_row["val/f1"] and summary["best_epoch"] == best_row["epoch"]
    test = json.loads(next(runs.rglob("evaluations/test-*.json")).read_text())
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["synthetic", "quickstart", "unet", "bce+dice"]
    assert cells[4] == f"{summary['val/iou']:.4f}"
    # The test IoU with its bootstrap interval: the error bar of a small test split.
    low, high = test["test/iou_ci_low"], test["test/iou_ci_high"]
    assert low <= test["test/iou"] <= high
    assert cells[6] == f"{test['test/iou']:.4f} (95 % CI {low:.4f}-{high:.4f})"
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_sync_lists_pending_offline_runs_and_needs_credentials(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    main(["fit", *args(runs, "--trainer.max_epochs=1")])
    (pending,) = offline_runs(runs)
    main(["sync", "--runs_dir", str(runs), "--dry-run"])
    assert str(pending) in capsys.readouterr().out
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert main(["sync", "--runs_dir", str(runs)]) == 2
    assert "wandb login" in capsys.readouterr().err
    (pending / f"{next(pending.glob('*.wandb')).name}.synced").touch()
    assert offline_runs(runs) == []


def test_same_seed_gives_the_same_val_iou(tmp_path, monkeypatch):
    longer = ["--trainer.logger=false", "--trainer.max_epochs=4", "--trainer.limit_train_batches=6",
              "--model.model_args.base_channels=8"]  # fmt: skip
    first = run_cli(["fit", *args(tmp_path / "a", *longer)])
    monkeypatch.delenv("LIGHTNING_SEG_RUN_ID", raising=False)
    second = run_cli(["fit", *args(tmp_path / "b", *longer)])
    one = first.summary.summary["val/iou"]
    assert one == second.summary.summary["val/iou"] and one > 0


def test_compiled_network_trains(tmp_path):
    # One graph (the training step) keeps the inductor compile time of this test low.
    cli = run_cli(["fit", *args(tmp_path, "--trainer.logger=false", "--model.compile=true",
                             "--trainer.max_epochs=1", "--trainer.limit_val_batches=0",
                             "--trainer.num_sanity_val_steps=0")])  # fmt: skip
    assert cli.trainer.global_step == 3
    assert cli.model.network._compiled_call_impl is not None


def run_module(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_seg", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def run_script(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The installed ``lightning-seg`` console script, as a user runs it (Lightning's DDP
    launcher starts the other processes by running the same program again)."""
    script = Path(sys.executable).parent / "lightning-seg"
    return subprocess.run([str(script), *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_only_strategies_whose_evaluation_forward_is_local_get_unequal_shares():
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, SingleDeviceStrategy

    from lightning_seg.data.base import forwards_alone

    assert forwards_alone(DDPStrategy()) and forwards_alone(DDPStrategy(start_method="spawn"))
    # FSDP gathers the sharded weights in every forward pass: unequal batch counts would hang.
    assert not forwards_alone(FSDPStrategy())
    assert not forwards_alone(SingleDeviceStrategy("cpu"))


@pytest.mark.timeout(900)
def test_ddp_on_two_cpu_processes(tmp_path):
    """One run folder, one W&B run, one summary line; the validation score of a fit on two
    processes (started from the installed script, then from ``python -m``), one of them running
    a batch more, equals a single process's score of the same
    checkpoint on the same data; ``test`` on two processes scores each of an odd number of
    images once, as one process does, and ``predict`` writes each image's mask once."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("LIGHTNING_SEG_RUN_ID", None)
    runs = tmp_path / "runs"
    # 9 validation and 15 test images on two processes: Lightning's padding sampler would score
    # one of each twice; with batches of 4 one process runs a validation batch more than the other.
    common = short_fit_args(runs, "--trainer.max_epochs=3", num_train=64, num_val=9, num_test=15,
                            train_batches=None, val_batches=None, width=8)  # fmt: skip
    ddp = ["--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"]
    fit = run_script("fit", *common, *ddp, env=env)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert fit.stdout.count("fit done: val/iou=") == 1
    assert "sync_dist" not in fit.stdout + fit.stderr  # every logged value is synchronised
    (run_dir,) = (runs / "quickstart").iterdir()
    assert len(list(run_dir.glob("wandb/offline-run-*"))) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["val/iou"] > 0.3  # a score that tells two different data sets apart

    best = summary["best_checkpoint"]
    single = run_cli(["validate", *common, "--trainer.accelerator=cpu", "--trainer.devices=1",
                      "--trainer.logger=false", f"--ckpt_path={best}"])  # fmt: skip
    assert float(single.trainer.callback_metrics["val/iou"]) == pytest.approx(
        summary["val/iou"], abs=1e-4
    )

    tested = run_module("test", *common, *ddp, f"--ckpt_path={best}", env=env)
    assert tested.returncode == 0, tested.stderr[-3000:]
    (evaluation,) = (run_dir / "evaluations").glob("test-*.json")
    scores = json.loads(evaluation.read_text())
    assert len(scores["images"]) == 15
    alone = run_cli(["test", *common, "--trainer.accelerator=cpu", "--trainer.devices=1",
                     "--trainer.logger=false", f"--ckpt_path={best}"])  # fmt: skip
    # Not test/loss: the quickstart's Dice term is taken over a batch, and batches differ.
    for name in ("test/iou", "test/f1", "test/iou_per_image", "test/iou_ci_low"):
        assert scores[name] == pytest.approx(float(alone.trainer.callback_metrics[name]), abs=1e-5)

    # predict without --input writes each test image's mask once, and says so once.
    predicted = run_script("predict", *common, *ddp, f"--ckpt_path={best}", env=env)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert predicted.stdout.count("predict done: 15 test-split masks") == 1
    assert len(list((run_dir / "predictions").rglob("*.png"))) == 15


def write_run(path: Path, config: dict, summary: dict) -> None:
    """A fit run folder as ``compare`` reads it: ``config.yaml`` and ``summary.json``."""
    import yaml

    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "summary.json").write_text(json.dumps({"val/iou": 0.9, "loss": "bce"} | summary))


def table_column(markdown: str, key: str, value: str) -> dict[str, str]:
    """Column ``value`` of a Markdown table, by the row's ``key`` cell."""
    rows = [[c.strip() for c in row.strip("|").split("|")] for row in markdown.splitlines()]
    header = rows[0]
    return {cells[header.index(key)]: cells[header.index(value)] for cells in rows[2:]}


def test_compare_names_the_settings_in_which_runs_of_one_experiment_differ(tmp_path):
    from lightning_seg.runs import find_runs, table

    def run(experiment: str, folder: str, seed: int, arch: str, lr: float = 1e-3, **model) -> None:
        path = tmp_path / experiment / folder
        config = {
            "seed_everything": seed,
            "runs_dir": str(tmp_path / folder),  # where files went: not a setting that matters
            "trainer": {"max_epochs": 24, "enable_progress_bar": seed == 1},
            "model": {"model_args": {"arch": arch},
                      "optimizer": {"class_path": "AdamW", "init_args": {"lr": lr}}, **model},
        }  # fmt: skip
        write_run(path, config, {"experiment": experiment, "model": "smp"})

    run("lite2", "a", 1, "FPN")  # written before the option existed: no freeze_encoder_bn key
    run("lite2", "b", 2, "FPN", lr=2e-3, freeze_encoder_bn=True)
    run("lite2", "c", 1, "Unet", freeze_encoder_bn=None)
    run("lite0", "d", 7, "Unet")  # alone in its experiment: nothing to tell apart
    markdown = table(find_runs([], tmp_path))
    settings = table_column(markdown, "run", "settings")
    # The architecture is in the model column (smp FPN ...), so it is not repeated here; a
    # key a run's config lacks reads "unset", one set to nothing "null".
    assert settings == {
        "a": "freeze_encoder_bn=unset optimizer.lr=0.001 seed_everything=1",
        "b": "freeze_encoder_bn=true optimizer.lr=0.002 seed_everything=2",
        "c": "freeze_encoder_bn=null optimizer.lr=0.001 seed_everything=1",
        "d": "-",
    }
    models = table_column(markdown, "run", "model")
    assert models["a"] == "smp FPN resnet34" and models["c"] == "smp Unet resnet34"
    # Runs that are each alone in their experiment need no such column.
    assert "settings" not in table(find_runs(["lite0"], tmp_path)).splitlines()[0]


def test_compare_plot_of_ten_runs_has_distinct_entries_and_marks_best_epochs(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from lightning_seg.runs import Run, plot

    runs = []
    for i in range(10):
        history = [{"epoch": e, "val/iou": 0.5 + 0.01 * i + 0.02 * e, "val/loss": 1.0 - 0.1 * e}
                   for e in range(4)]  # fmt: skip
        runs.append(
            Run(tmp_path / f"2026-run{i:02d}", {"experiment": f"exp{i}", "history": history})
        )
    captured = {}
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured["fig"] = fig
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        plot(runs, tmp_path / "c.png")
    finally:
        plt.Figure.savefig = original
    iou_axes, loss_axes = captured["fig"].axes
    labels = [line.get_label() for line in iou_axes.lines if not line.get_label().startswith("_")]
    assert len(labels) == len(set(labels)) == 10
    colours = {line.get_color() for line in iou_axes.lines}
    assert len(colours) == 10  # one colour per run, shared by its line and its best-epoch star
    stars = [line for line in iou_axes.lines if line.get_marker() == "*"]
    assert [list(s.get_xdata()) for s in stars] == [[3]] * 10  # the best epoch, numbered as saved
    assert len(loss_axes.lines) == 10


def test_compare_model_column_names_the_architecture_and_encoder_not_just_smp(tmp_path):
    from lightning_seg.runs import find_runs, table

    def run(folder: str, model: str, model_args: dict, summary_extra: dict) -> None:
        config = {"model": {"model": model, "model_args": model_args}}
        write_run(tmp_path / folder / "run", config,
                  {"experiment": folder, "model": model} | summary_extra)  # fmt: skip

    lite2 = {"arch": "FPN", "encoder_name": "tu-tf_efficientnet_lite2"}
    run("fpn", "smp", lite2, {})  # written before summaries named the network: from config.yaml
    run("unet", "smp", {"encoder_name": "resnet18"}, {"network": "smp Unet resnet18"})
    members = [{"model": "smp", "encoder_name": "tu-tf_efficientnet_lite0"}, {"model": "unet"}]
    run("pair", "ensemble", {"members": members}, {})
    run("plain", "segnet", {"base_channels": 16}, {})
    models = table_column(table(find_runs([], tmp_path)), "experiment", "model")
    assert models == {
        "fpn": "smp FPN tf_efficientnet_lite2",
        "unet": "smp Unet resnet18",
        "pair": "ensemble: smp Unet tf_efficientnet_lite0 + unet",
        "plain": "segnet",
    }
