"""The benchmark scripts still run (they measure; these only check they do not rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lightning_seg.data import FolderDataModule
from tests.data.generated import make_folder

ROOT = Path(__file__).resolve().parents[1]


def test_models_benchmark_writes_table_and_json(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/models.py", "--models", "unet_upsample", "pspnet",
         "--size", "32", "--batch", "2", "--iters", "1", "--warmup", "0",
         "--output", str(tmp_path)],
        cwd=ROOT, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((tmp_path / "models.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["unet_upsample", "pspnet"]
    assert all(r["images_per_s"] > 0 and r["gflops"] > 0 for r in rows)
    assert "| `pspnet` |" in (tmp_path / "models.md").read_text()


def test_accuracy_benchmark_fits_tests_and_tabulates_through_the_cli(tmp_path):
    tiny = ("--trainer.max_epochs=1 --trainer.limit_train_batches=2 --trainer.limit_val_batches=1 "
            "--data.init_args.size=32 --data.init_args.num_train=8 --data.init_args.num_val=4 "
            "--data.init_args.num_test=4 --model.model_args.depth=2 "
            "--model.model_args.base_channels=4 --tracking.num_images=0")  # fmt: skip
    result = subprocess.run(
        [sys.executable, "benchmarks/accuracy.py", "--experiments", "quickstart",
         "--output", str(tmp_path / "out"), "--runs_dir", str(tmp_path / "runs"),
         f"--args={tiny}"],
        cwd=ROOT, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "[1/1] quickstart: val IoU" in result.stdout
    (row,) = json.loads((tmp_path / "out" / "accuracy.json").read_text())["rows"]
    assert row["experiment"] == "quickstart" and row["model"] == "unet"
    for key in ("val_iou", "test_iou", "test_iou_per_image", "test_f1", "test_iou_worst_image"):
        assert 0.0 <= row[key] <= 1.0, key
    assert row["test_iou_worst_image"] <= row["test_iou_per_image"]
    low, high = row["test_iou_ci"]
    assert low <= row["test_iou"] <= high
    assert f"| {low:.3f}-{high:.3f} |" in (tmp_path / "out" / "accuracy.md").read_text()
    assert row["history"] and row["history"][0]["time_s"] > 0
    assert "| `quickstart` |" in (tmp_path / "out" / "accuracy.md").read_text()
    assert (tmp_path / "out" / "accuracy.png").stat().st_size > 0


def test_accuracy_benchmark_resumes_a_half_finished_table():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from accuracy import PH2_EXPERIMENTS, pending

    done = {"segnet_bce", "unet_bce"}
    left = pending(list(PH2_EXPERIMENTS), done, named=False)
    assert (
        "unet_bce" not in left and "segnet_dice" in left and len(left) == len(PH2_EXPERIMENTS) - 2
    )
    assert pending(["unet_bce"], done, named=True) == ["unet_bce"]  # asked for: measured again


def test_accuracy_table_keeps_each_rows_machine_when_a_subset_reruns_elsewhere(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from accuracy import load, save

    fast, slow = "Xeon (with AMX-BF16), 2 cores", "EPYC (without AMX-BF16), 2 cores"
    row = {"experiment": "unet_bce", "val_iou": 0.88, "test_iou": 0.89, "history": []}
    # A table written before rows carried their machine names it once, in its header.
    old = {"machine": f"PH2 test split ...; shipped recipe; {fast}.", "rows": [row]}
    (tmp_path / "accuracy.json").write_text(json.dumps(old))
    rows = load(tmp_path / "accuracy.json")
    assert rows[0]["machine"] == fast
    save([*rows, {**row, "experiment": "segnet_bce", "machine": slow}], tmp_path)

    table = (tmp_path / "accuracy.md").read_text()
    # Machines are numbered in table order (segnet rows come first).
    assert f"[1] {slow}; [2] {fast}" in table.splitlines()[0]
    lines = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| `")}
    assert lines["| `segnet_bce`"].endswith("machine [1] |")
    assert lines["| `unet_bce`"].endswith("machine [2] |")
    assert json.loads((tmp_path / "accuracy.json").read_text())["machines"] == [slow, fast]


def tiny_experiment(tmp_path: Path) -> dict[str, str]:
    """A one-epoch U-Net on 8 generated images split 2 / 2 / 4 (test folds 0-1, val folds 0-1),
    and the environment that makes ``--experiment tiny`` find it."""
    data = make_folder(tmp_path / "data", n=8)  # read as binary masks: colour is foreground
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "tiny.yaml").write_text(
        "seed_everything: 1\n"
        "trainer: {max_epochs: 1, limit_train_batches: 1}\n"
        "model: {model: unet, model_args: {depth: 2, base_channels: 4}, loss: bce}\n"
        "tracking: {num_images: 0}\n"
        "data:\n  class_path: lightning_seg.data.FolderDataModule\n"
        f"  init_args: {{root: {data}, image_size: 16, batch_size: 2, num_workers: 0,\n"
        "    split_fractions: [0.25, 0.25, 0.5]}\n"
    )
    return {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "offline",
            "LIGHTNING_SEG_EXPERIMENTS": str(tmp_path / "experiments")}  # fmt: skip


def run_tiny_benchmark(tmp_path: Path, script: str, folds_flag: str) -> tuple[dict, Callable]:
    """Run ``benchmarks/<script>.py`` on the tiny experiment's folds 0 and 1: its table entry,
    and a rerun of the same command (which should resume)."""
    env = tiny_experiment(tmp_path)
    command = [sys.executable, f"benchmarks/{script}.py", "--experiments", "tiny",
               folds_flag, "0", "1", "--output", str(tmp_path / "out"),
               "--runs_dir", str(tmp_path / "runs")]  # fmt: skip

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    result = run()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads((tmp_path / "out" / f"{script}.json").read_text())["experiments"]["tiny"], run


def test_crossval_benchmark_tests_every_image_once_over_the_folds(tmp_path):
    entry, rerun = run_tiny_benchmark(tmp_path, "crossval", "--folds")
    tested = [image["name"] for fold in entry["folds"].values() for image in fold["images"]]
    assert sorted(tested) == [f"images/case{i:02d}.jpg" for i in range(8)]
    pooled = entry["pooled"]
    assert pooled["images"] == 8 and pooled["folds"] == 2
    low, high = pooled["test_iou_ci"]
    assert low <= pooled["test_iou"] <= high
    assert "| `tiny` | 2 (8 images) |" in (tmp_path / "out" / "crossval.md").read_text()
    again = rerun()
    assert again.returncode == 0 and "0 fit(s) to run" in again.stdout  # resumes: nothing left


def test_crossval_keeps_a_variant_apart_and_pairs_entries_tested_on_the_same_images():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from crossval import entry_name, paired, todo

    def fold(number, scores):
        images = [{"name": f"img{i}", "iou": s, "intersection": [round(100 * s)],
                   "union": [100]} for i, s in enumerate(scores, 2 * number)]  # fmt: skip
        return {"fold": number, "test_iou": sum(scores) / 2, "images": images}

    table = {"experiments": {
        "fpn": {"folds": {"0": fold(0, [0.9, 0.8]), "1": fold(1, [0.7, 0.9])}},
        "fpn:unfrozen": {"folds": {"0": fold(0, [0.8, 0.8]), "1": fold(1, [0.6, 0.9])}},
        "unet": {"folds": {"0": fold(0, [0.9, 0.9])}},  # half the images: not paired
    }}  # fmt: skip
    assert todo(["fpn"], [0, 1, 2], table) == [("fpn", 2)]
    assert todo(["fpn"], [0, 1], table, "frozen") == [("fpn", 0), ("fpn", 1)]
    assert entry_name("fpn", "unfrozen") in table["experiments"]
    (line,) = paired(table)  # the variant against the leader, which is also its recipe
    assert line.startswith("- `fpn:unfrozen` - `fpn`: -0.0500 (95 % CI")
    assert line.endswith("paired over 4 images)")


def test_paired_differences_compare_with_the_best_recipe_and_each_variant_with_its_own():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from crossval import comparisons, scored_entries

    def entry(scores):
        images = [{"name": f"img{i}", "iou": s, "intersection": [round(100 * s)], "union": [100]}
                  for i, s in enumerate(scores)]  # fmt: skip
        return {"folds": {"0": {"fold": 0, "images": images}}}

    table = {"experiments": {
        "unet": entry([0.8, 0.8]), "unet:wide": entry([0.85, 0.8]),
        "fpn": entry([0.9, 0.8]), "fpn:ema": entry([0.9, 0.7]),
        "segnet": entry([0.95]),  # fewer images: neither the leader nor paired
    }}  # fmt: skip
    assert comparisons(scored_entries(table)) == [
        ("unet", "fpn"),
        ("unet:wide", "fpn"),
        ("fpn:ema", "fpn"),
        ("unet:wide", "unet"),
    ]  # four lines where every pair would be ten


@pytest.mark.parametrize("script", ["selection.py", "crossval.py"])
def test_benchmarks_refuse_to_pool_a_label_with_other_flags(tmp_path, script):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from crossval import variant_error

    recorded = {"experiments": {"fpn:ema": {"args": "--a=1  --b=2", "folds": {"0": {}}}}}
    assert variant_error(["fpn"], recorded, "--a=1 --b=2", "ema") == ""  # the same flags resume
    assert variant_error(["fpn"], recorded, "--a=1", "other") == ""  # another label: its own row
    assert "name the variant with --label" in variant_error(["fpn"], recorded, "--a=1")
    (tmp_path / script.replace(".py", ".json")).write_text(json.dumps(recorded))
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--experiments", "fpn", "--args=--a=1",
         "--label=ema", "--output", str(tmp_path), "--runs_dir", str(tmp_path / "runs")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    refused = "fpn:ema: its recorded folds ran with --args='--a=1  --b=2', not '--a=1'"
    assert refused in result.stderr
    assert not (tmp_path / "runs").exists()  # refused before any fit
    assert json.loads((tmp_path / script.replace(".py", ".json")).read_text()) == recorded


def test_selection_benchmark_validates_every_non_test_image_once_and_never_tests(tmp_path):
    entry, rerun = run_tiny_benchmark(tmp_path, "selection", "--val_folds")
    validated = [image["name"] for fold in entry["folds"].values() for image in fold["images"]]
    assert len(validated) == len(set(validated)) == 4  # the 4 non-test images, each once
    split = FolderDataModule(root=str(tmp_path / "data"), split_fractions=(0.25, 0.25, 0.5))
    assert not {f"images/{pair.image.name}" for pair in split.splits()["test"]} & set(validated)
    assert not list((tmp_path / "runs").rglob("test-*.json"))  # the test split is never read
    pooled = entry["pooled"]
    assert pooled["images"] == 4 and pooled["folds"] == 2
    low, high = pooled["val_iou_ci"]
    assert low <= pooled["val_iou"] <= high
    assert "| `tiny` | 2 (4 images) |" in (tmp_path / "out" / "selection.md").read_text()
    again = rerun()
    assert again.returncode == 0 and "0 fit(s) to run" in again.stdout  # resumes: nothing left
