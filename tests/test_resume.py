"""A run killed with SIGKILL and resumed from last.ckpt ends where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_seg.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
FLIPS = (
    '[{"name": "HorizontalFlip", "p": 0.5}, {"name": "ColorJitter", "brightness": 0.3, "p": 0.5}]'
)
ARGS = ["--experiment=quickstart", "--trainer.max_epochs=6", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--data.init_args.size=48",
        "--data.init_args.num_train=96", "--data.init_args.num_val=16",
        "--data.init_args.batch_size=8", "--data.init_args.num_workers=1",
        f"--data.init_args.train_transforms={FLIPS}",
        "--model.model_args.depth=2", "--model.model_args.base_channels=8"]  # fmt: skip


def command(runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lightning_seg", "fit", *ARGS, f"--runs_dir={runs}", *extra]


def environment() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.pop("LIGHTNING_SEG_RUN_ID", None)
    return env


def completed_epochs(last: Path) -> int:
    try:
        return int(torch.load(last, weights_only=True, map_location="cpu")["epoch"])
    except Exception:  # not written yet, or being written
        return -1


@pytest.mark.timeout(600)
def test_killed_and_resumed_run_reaches_the_same_val_iou(tmp_path, monkeypatch):
    # The uninterrupted run in this process (one interpreter start fewer); the killed one must
    # be a separate process, and so is its resumption (a fresh interpreter, as a user's is).
    monkeypatch.delenv("LIGHTNING_SEG_RUN_ID", raising=False)
    run_cli(["fit", *ARGS, f"--runs_dir={tmp_path / 'straight'}"])
    (straight,) = (tmp_path / "straight").rglob("summary.json")
    expected = json.loads(straight.read_text())

    runs = tmp_path / "killed"
    process = subprocess.Popen(command(runs), cwd=ROOT, env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    last = None
    while time.monotonic() < deadline and process.poll() is None:
        found = list(runs.rglob("last.ckpt"))
        if found and completed_epochs(found[0]) >= 2:  # three epochs done: kill inside the 4th
            last = found[0]
            time.sleep(0.2)
            break
        time.sleep(0.05)
    assert process.poll() is None and last is not None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (last.parent.parent / "summary.json").exists()

    subprocess.run(command(runs, f"--ckpt_path={last}"), cwd=ROOT, env=environment(),
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    resumed = json.loads((last.parent.parent / "summary.json").read_text())
    assert [r["epoch"] for r in resumed["history"]] == [r["epoch"] for r in expected["history"]]
    for got, want in zip(resumed["history"], expected["history"], strict=True):
        assert got["val/iou"] == pytest.approx(want["val/iou"], abs=1e-4), got["epoch"]
    assert resumed["val/iou"] == pytest.approx(expected["val/iou"], abs=1e-4)
