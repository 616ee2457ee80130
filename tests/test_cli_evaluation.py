"""Commands tell the truth: exit statuses, evaluation on the checkpoint's own data, results
filed with the run that made the checkpoint, and the score a checkpoint really delivers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_seg.cli import run_cli
from lightning_seg.entry import main
from lightning_seg.errors import ConfigurationError
from tests.cli_helpers import exit_status, short_fit_args
from tests.data.generated import make_folder

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).parent / "lightning-seg"


def fit_run(tiny_fit_args: list[str], runs: Path, *extra: str) -> Path:
    args = [a for a in tiny_fit_args if not a.startswith("--runs_dir")]
    run_cli(["fit", *args, f"--runs_dir={runs}", "--trainer.logger=false", *extra])
    (summary,) = runs.rglob("summary.json")
    return summary.parent


@pytest.mark.skipif(not CONSOLE_SCRIPT.is_file(), reason="lightning-seg is not installed")
def test_console_script_exits_zero_for_every_lightning_subcommand(tiny_fit_args, tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("LIGHTNING_SEG_RUN_ID", None)

    def console(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(CONSOLE_SCRIPT), *argv], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    fit = console("fit", *tiny_fit_args, "--trainer.max_epochs=1")
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert "SegmentationCLI object" not in fit.stdout + fit.stderr
    last = next((tmp_path / "runs").rglob("last.ckpt"))
    for command in ("validate", "test", "predict"):
        result = console(command, f"--ckpt_path={last}", "--trainer.enable_progress_bar=false")
        assert result.returncode == 0, (command, result.stderr[-2000:])
        assert "SegmentationCLI object" not in result.stdout + result.stderr


def test_predict_without_input_writes_the_masks_that_test_scores(tiny_fit_args, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from lightning_seg.split_predictions import mask_file

    # Long enough to predict some foreground, so the comparison below can fail.
    longer = ["--trainer.max_epochs=4", "--trainer.limit_train_batches=6",
              "--model.model_args.base_channels=8"]  # fmt: skip
    run = fit_run(tiny_fit_args, tmp_path / "runs", *longer)
    best = json.loads((run / "summary.json").read_text())["best_checkpoint"]
    flags = [f"--ckpt_path={best}", "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    tested = run_cli(["test", *flags])
    predicted = run_cli(["predict", *flags])
    assert "predict done: 8 test-split masks" in capsys.readouterr().out
    folder = run / "predictions" / f"test-{Path(best).stem}"
    dm = predicted.datamodule
    names = dm.sample_names("test")
    assert len(list(folder.rglob("*.png"))) == len(names) == 8
    # The written masks score on the split's truth what `test` reported: the same labels.
    intersection = union = 0
    for index, name in enumerate(names):
        written = np.array(Image.open(folder / mask_file(name))) == 255
        truth = dm.datasets["test"][index]["mask"].numpy() == 1
        intersection += int((written & truth).sum())
        union += int((written | truth).sum())
    test_iou = float(tested.trainer.callback_metrics["test/iou"])
    assert 0 < intersection / union == pytest.approx(test_iou, abs=1e-6)


def test_predict_without_input_pastes_masks_back_to_each_images_size_as_predict_input_does(
    tmp_path, capsys
):
    import numpy as np
    from PIL import Image

    from lightning_seg.split_predictions import mask_file

    root = make_folder(tmp_path / "data", n=20)  # 40 x 60 images, resized to 32 x 32
    data = ["--data=lightning_seg.data.FolderDataModule", f"--data.root={root}",
            "--data.image_size=32", "--data.batch_size=4"]  # fmt: skip
    # Long enough to predict every class, so that the comparison below can fail.
    flags = short_fit_args(tmp_path / "runs", *data, "--model.tta=flips", epochs=12,
                           train_batches=None, width=8, logger=False)  # fmt: skip
    flags = [f for f in flags if not f.startswith("--data.init_args.")]  # synthetic-only flags
    run_cli(["fit", *flags])
    (summary,) = (tmp_path / "runs").rglob("summary.json")
    best = json.loads(summary.read_text())["best_checkpoint"]
    capsys.readouterr()
    predicted = run_cli(["predict", f"--ckpt_path={best}", "--trainer.logger=false",
                         "--trainer.enable_progress_bar=false"])  # fmt: skip
    out = capsys.readouterr().out
    assert "predict done: 3 test-split masks, each at its image's own size" in out
    folder = summary.parent / "predictions" / f"test-{Path(best).stem}"
    names = predicted.datamodule.sample_names("test")
    inputs = [root / name for name in names]
    assert main(["predict", "--ckpt", best, "--input", *map(str, inputs),
                 "--output", str(tmp_path / "files"), "--no-progress"]) == 0  # fmt: skip
    for name, image in zip(names, inputs, strict=True):
        split_mask = np.array(Image.open(folder / mask_file(name)))
        file_mask = np.array(Image.open(tmp_path / "files" / f"{image.stem}.png"))
        assert split_mask.shape == file_mask.shape == (40, 60)
        # The same probabilities, resized the same way: a pixel may differ only where the
        # batch shapes round a probability differently.
        assert (split_mask == file_mask).mean() > 0.999, name


def test_split_masks_are_named_after_their_samples_inside_the_output_folder():
    from lightning_seg.split_predictions import mask_file

    assert str(mask_file("PH2Dataset/IMD015/IMD015.bmp")) == "PH2Dataset/IMD015/IMD015.png"
    assert str(mask_file("scans/a.tif#0,256")) == "scans/a#0,256.png"
    assert str(mask_file("test-0007")) == "test-0007.png"
    assert str(mask_file("../../etc/passwd")) == "etc/passwd.png"


def test_test_without_experiment_uses_the_checkpoints_own_run_config(tiny_fit_args, tmp_path):
    run = fit_run(tiny_fit_args, tmp_path / "runs", "--data.init_args.size=40")
    best = json.loads((run / "summary.json").read_text())["best_checkpoint"]
    cli = run_cli(["test", f"--ckpt_path={best}", "--trainer.logger=false",
                   "--trainer.enable_progress_bar=false"])  # fmt: skip
    # The 40-pixel data of the run, not the experiment defaults (96) nor another dataset.
    assert cli.datamodule.size == 40
    (result,) = (run / "evaluations").glob("test-*.json")
    assert json.loads(result.read_text())["checkpoint"] == str(Path(best).resolve())
    assert [p for p in (tmp_path / "runs" / "quickstart").iterdir()] == [run]  # no new folder


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        ("--model.model=segnet", ("'unet'", "'segnet'")),  # another network
        ("--data.init_args.num_lesion_classes=2", ("1 class", "3")),  # other classes
    ],
)
def test_checkpoint_that_does_not_fit_the_experiment_is_refused_in_one_line(
    tiny_fit_args, tmp_path, capsys, flag, named
):
    run = fit_run(tiny_fit_args, tmp_path / "runs")
    last = run / "checkpoints" / "last.ckpt"
    status = exit_status(["test", "--experiment=quickstart", f"--ckpt_path={last}", flag])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1
    assert all(text in err for text in named)


def test_checkpoint_outside_a_run_needs_an_experiment(tiny_fit_args, tmp_path, capsys):
    run = fit_run(tiny_fit_args, tmp_path / "runs")
    loose = tmp_path / "model.ckpt"
    loose.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    assert exit_status(["test", f"--ckpt_path={loose}"]) == 2
    assert "--experiment" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "split"), [("test", "test"), ("validate", "val")])
def test_evaluation_writes_every_images_score_and_names_the_worst(
    tiny_fit_args, tmp_path, capsys, command, split
):
    run = fit_run(tiny_fit_args, tmp_path / "runs")
    best = json.loads((run / "summary.json").read_text())["best_checkpoint"]
    capsys.readouterr()
    run_cli([command, f"--ckpt_path={best}", "--trainer.logger=false"])
    *_, worst_line, done_line = capsys.readouterr().out.strip().splitlines()
    result = json.loads(next((run / "evaluations").glob(f"{command}-*.json")).read_text())
    images = result["images"]
    assert [r["name"] for r in images] == [f"{split}-{i:04d}" for i in range(8)]  # each once
    # The records add up to the dataset score, and each image's IoU is its own counts'.
    inter = sum(r["intersection"][0] for r in images)
    union = sum(r["union"][0] for r in images)
    assert inter / union == pytest.approx(result[f"{split}/iou"], abs=1e-6)
    assert result[f"{split}/iou_ci_low"] <= result[f"{split}/iou"] <= result[f"{split}/iou_ci_high"]
    for r in images:
        assert r["iou"] == pytest.approx(r["intersection"][0] / r["union"][0], abs=1e-6)
    worst = sorted(images, key=lambda r: r["iou"])[:3]
    assert worst_line == f"worst {split} images: " + ", ".join(
        f"{r['name']} {r['iou']:.3f}" for r in worst
    )
    assert done_line.startswith(f"{command} done: {split}/iou=")
    assert "95 % CI" in done_line


def test_evaluations_say_when_the_scored_images_were_trained_on(tmp_path, capsys):
    root = make_folder(tmp_path / "data", n=20)
    data = ["--data=lightning_seg.data.FolderDataModule", f"--data.root={root}",
            "--data.image_size=32", "--data.batch_size=4",
            "--data.split_fractions=[0.5,0.25,0.25]"]  # fmt: skip
    flags = short_fit_args(tmp_path / "runs", *data, epochs=1, logger=False)
    flags = [f for f in flags if not f.startswith("--data.init_args.")]  # synthetic-only flags
    run_cli(["fit", *flags])
    (summary,) = (tmp_path / "runs").rglob("summary.json")
    best = json.loads(summary.read_text())["best_checkpoint"]
    state = torch.load(best, weights_only=True, map_location="cpu")
    trained_on = state["lightning_seg"]["trained_on"]
    assert len(trained_on) == 10 and all(name.startswith("images/") for name in trained_on)

    def evaluate(command: str, *extra: str) -> tuple[dict, list[str]]:
        capsys.readouterr()
        run_cli([command, f"--ckpt_path={best}", "--trainer.logger=false", *extra])
        lines = capsys.readouterr().out.strip().splitlines()
        stage = "test" if command == "test" else "validate"
        path = summary.parent / "evaluations" / f"{stage}-{Path(best).stem}.json"
        return json.loads(path.read_text()), lines

    result, lines = evaluate("test")
    assert result["held_out"] is True and "held_out=false" not in lines[-1]
    assert not any(line.startswith("warning:") for line in lines)
    # Another data seed draws another split: some of its test images were trained on.
    result, lines = evaluate("test", "--data.seed=3")
    seen = result["images_trained_on"]
    assert result["held_out"] is False and seen and set(seen) <= set(trained_on)
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings[0].startswith(f"warning: {len(seen)} test image(s) are training images")
    assert lines[-1].startswith("test done:") and lines[-1].endswith(
        f"held_out=false checkpoint={best}"
    )
    result, lines = evaluate("validate", "--data.seed=3")
    assert result["held_out"] is False and "val/iou is not a held-out score" in lines[-2]
    assert "images_chosen_on" not in result  # validation images are what validate scores
    # Fold 3 tests on the quarter this (fold 0) checkpoint validated on: held out from
    # training, but it chose the epoch and threshold.
    result, lines = evaluate("test", "--data.fold=3")
    chosen = result["images_chosen_on"]
    assert not result["images_trained_on"] and chosen and result["held_out"] is False
    assert lines[-2].startswith(f"warning: {len(chosen)} test image(s) are validation images")
    assert lines[-1].endswith(f"held_out=false checkpoint={best}")


def test_compare_paired_gives_the_difference_of_two_runs_on_the_same_images(
    tiny_fit_args, tmp_path, capsys
):
    runs = tmp_path / "runs"
    first = fit_run(tiny_fit_args, runs / "a")
    second = fit_run(tiny_fit_args, runs / "b", "--seed_everything=7", "--trainer.max_epochs=1")
    compare = ["compare", str(first), str(second), "--paired", "--runs_dir", str(runs),
               "--plot", str(tmp_path / "c.png")]  # fmt: skip
    capsys.readouterr()
    assert exit_status(compare) == 2  # neither is tested yet: one line says what to run
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has not been tested" in err[0] and "lightning-seg test" in err[0]

    results = []
    for run in (first, second):
        best = json.loads((run / "summary.json").read_text())["best_checkpoint"]
        run_cli(["test", f"--ckpt_path={best}", "--trainer.logger=false"])
        results.append(json.loads(next((run / "evaluations").glob("test-*.json")).read_text()))
    capsys.readouterr()
    assert exit_status(compare) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(
        r"quickstart \(\w{6}\) - quickstart \(\w{6}\): test IoU ([\d.]+) - ([\d.]+) = "
        r"([+-][\d.]+) \(95 % CI ([+-][\d.]+) to ([+-][\d.]+), paired bootstrap over 8 shared "
        r"images\): .+",
        line,
    )
    assert match, line
    iou_a, iou_b, difference, low, high = map(float, match.groups())
    assert (iou_a, iou_b) == pytest.approx([r["test/iou"] for r in results], abs=1e-4)
    assert difference == pytest.approx(iou_a - iou_b, abs=2e-4)
    assert low <= difference <= high

    assert exit_status(["compare", str(first), "--paired", "--runs_dir", str(runs)]) == 2
    assert "compares two runs, got" in capsys.readouterr().err


def test_compare_shows_the_test_of_the_best_checkpoint_not_the_best_test(
    tiny_fit_args, tmp_path, capsys
):
    runs = tmp_path / "runs"
    run = fit_run(tiny_fit_args, runs)
    summary = json.loads((run / "summary.json").read_text())
    for checkpoint in (summary["best_checkpoint"], str(run / "checkpoints" / "last.ckpt")):
        run_cli(["test", f"--ckpt_path={checkpoint}", "--trainer.logger=false"])
    results = {p.stem: json.loads(p.read_text()) for p in (run / "evaluations").glob("*.json")}
    best = results[f"test-{Path(summary['best_checkpoint']).stem}"]["test/iou"]
    capsys.readouterr()
    main(["compare", "--runs_dir", str(runs), "--plot", str(tmp_path / "c.png")])
    row = capsys.readouterr().out.splitlines()[2]
    assert [c.strip() for c in row.strip("|").split("|")][6].startswith(f"{best:.4f} (95 % CI")


def test_fit_line_and_summary_give_the_iou_at_half_and_the_tuned_one(
    tiny_fit_args, tmp_path, capsys
):
    run = fit_run(tiny_fit_args, tmp_path / "runs", "--model.tune_threshold=true")
    summary = json.loads((run / "summary.json").read_text())
    assert {"val/iou_at_0.5", "val/iou_tuned", "threshold"} <= set(summary)
    assert summary["val/iou_tuned"] >= summary["val/iou_at_0.5"] - 1e-9
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"threshold {summary['threshold']:.2f}" in line
    assert f"val/iou_tuned={summary['val/iou_tuned']:.4f}" in line
    state = torch.load(summary["best_checkpoint"], weights_only=True, map_location="cpu")
    assert state["hyper_parameters"]["threshold"] == summary["threshold"]


def test_threshold_tuning_refuses_a_fit_that_trains_on_val_before_any_run_folder(tmp_path, capsys):
    root = make_folder(tmp_path / "data")
    runs = tmp_path / "runs"
    flags = [
        "fit", "--experiment=quickstart", f"--runs_dir={runs}", "--model.tune_threshold=true",
        "--data=lightning_seg.data.FolderDataModule", f"--data.root={root}",
        "--data.image_size=32", "--data.train_splits=[train, val]",
    ]  # fmt: skip
    assert exit_status(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.train_splits includes val" in err[0], err
    assert not runs.exists()  # refused before a run folder (or a W&B run) was made

    from types import SimpleNamespace

    from lightning_seg.callbacks import ThresholdTuner

    # The callback refuses too, for a Trainer built in Python without the command line.
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_splits=("train", "val")))
    with pytest.raises(ConfigurationError, match=r"model\.threshold"):
        ThresholdTuner().setup(trainer, None, "fit")  # type: ignore[arg-type]


def test_validate_scores_the_best_checkpoint_as_the_threshold_tuner_and_test_do(tmp_path):
    # Every validation image, the test-time flips and the tuned threshold: `validate` must give
    # the IoU the tuner reported, not the one-view score of the per-epoch validation.
    runs = tmp_path / "runs"
    flags = short_fit_args(runs, "--model.tune_threshold=true", "--model.tta=flips", epochs=3,
                           train_batches=None, val_batches=None, logger=False)  # fmt: skip
    run_cli(["fit", *flags])
    (summary_path,) = runs.rglob("summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["tta"] == "flips"
    cli = run_cli(["validate", f"--ckpt_path={summary['best_checkpoint']}",
                   "--trainer.logger=false", "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert float(cli.trainer.callback_metrics["val/iou"]) == pytest.approx(
        summary["val/iou_tuned"], abs=1e-4
    )


def test_evaluation_flags_on_the_command_line_win_over_the_checkpoints_values(
    tiny_fit_args, tmp_path
):
    run = fit_run(tiny_fit_args, tmp_path / "runs", "--model.tune_threshold=true")
    summary = json.loads((run / "summary.json").read_text())
    base = ["validate", f"--ckpt_path={summary['best_checkpoint']}", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false"]  # fmt: skip
    stored = run_cli(base).model.hparams
    assert (stored["tta"], stored["threshold"]) == ("none", summary["threshold"])  # not 0.5
    told = run_cli([*base, "--model.tta=hflip", "--model.threshold=0.9"]).model.hparams
    assert (told["tta"], told["threshold"]) == ("hflip", 0.9)


def test_test_adds_its_metrics_to_the_fit_runs_wandb_run(tiny_fit_args, tmp_path, monkeypatch):
    from tests.wandb_offline import read_offline_run

    run_cli(["fit", *tiny_fit_args])
    (run,) = (tmp_path / "runs" / "quickstart").iterdir()
    best = json.loads((run / "summary.json").read_text())["best_checkpoint"]
    monkeypatch.delenv("LIGHTNING_SEG_RUN_ID", raising=False)
    run_cli(["test", f"--ckpt_path={best}", "--trainer.enable_progress_bar=false"])
    fit_file, test_file = sorted(run.glob("wandb/offline-run-*/*.wandb"))
    fit, test = read_offline_run(fit_file), read_offline_run(test_file)
    assert fit.run_id == test.run_id and test.name == fit.name == "quickstart"  # one row
    assert test.metric("test/iou") and fit.metric("val/iou")
