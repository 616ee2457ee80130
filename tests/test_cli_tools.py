"""`lightning-seg predict` (files) and `export` through the command line, next to
LightningCLI's own predict over a datamodule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from lightning_seg.cli import run_cli
from lightning_seg.entry import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, fit_checkpoint) -> Path:
    return fit_checkpoint(tmp_path_factory.mktemp("runs"))


def test_checkpoint_carries_what_inference_needs(checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    # The names of the images it learned from: `test` tells a held-out score from a leaked one.
    assert state["lightning_seg"].pop("trained_on") == [f"train-{i:04d}" for i in range(8)]
    # And those that chose its epoch and threshold: scoring them is no held-out test either.
    assert state["lightning_seg"].pop("chosen_on") == [f"val-{i:04d}" for i in range(4)]
    assert state["lightning_seg"] == {
        "preprocessing": {
            "image_size": [32, 32], "tiled": False, "interpolation": "auto",
            # stride 4: a depth-2 U-Net pads its input to a multiple of 4
            "mean": [0.5] * 3, "std": [0.25] * 3, "channels": 3, "stride": 4,
        },
        "class_names": ["lesion"],
    }  # fmt: skip


def test_predict_files_through_the_cli(checkpoint, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (45, 61, 3), dtype=np.uint8)).save(inputs / "a.png")
    Image.fromarray(rng.integers(0, 255, (80, 70, 3), dtype=np.uint8)).save(inputs / "b.jpg")
    argv = ["predict", "--ckpt", str(checkpoint), "--input", str(inputs),
            "--output", str(tmp_path / "out"), "--tta", "flips", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    masks = {p.name: np.asarray(Image.open(p)) for p in (tmp_path / "out").glob("*.png")}
    assert masks["a.png"].shape == (45, 61) and masks["b.png"].shape == (80, 70)
    assert set(np.unique(masks["a.png"])) <= {0, 255}


def test_lightning_predict_over_the_datamodule_still_works(checkpoint, tmp_path):
    cli = run_cli(["predict", "--experiment=quickstart", f"--ckpt_path={checkpoint}",
                "--data.init_args.size=32", "--data.init_args.num_test=4",
                "--model.model_args.depth=2", "--model.model_args.base_channels=4",
                f"--runs_dir={tmp_path}", "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert cli is not None


def test_export_onnx_through_the_cli(checkpoint, tmp_path, capsys):
    output = tmp_path / "model.onnx"
    main(["export", "--ckpt", str(checkpoint), "--format", "onnx", "--output", str(output)])
    assert output.is_file() and "max" in capsys.readouterr().out.lower()
    session = onnxruntime.InferenceSession(str(output))
    (logits,) = session.run(
        None, {session.get_inputs()[0].name: np.zeros((2, 3, 40, 56), np.float32)}
    )
    assert logits.shape == (2, 1, 40, 56)


def test_predict_benchmark_runs(checkpoint, tmp_path):
    # Only checks the script runs; "--modes resize" keeps it short.
    result = subprocess.run(
        [sys.executable, "benchmarks/predict.py", "--ckpt", str(checkpoint), "--images", "1",
         "--tta", "none", "--repeat", "1", "--modes", "resize", "--output", str(tmp_path)],
        cwd=REPO, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "images/s" in (tmp_path / "predict.md").read_text()
