"""A run's console output: the facts, one line each, readable in a log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fit_into_a_log_prints_plain_epoch_lines_and_no_library_chatter(tiny_fit_args):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "default"}
    env.pop("LIGHTNING_SEG_RUN_ID", None)
    env.pop("WANDB_SILENT", None)
    args = [a for a in tiny_fit_args if "enable_progress_bar" not in a
            and "enable_model_summary" not in a]  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "lightning_seg", "fit", *args], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "\r" not in output  # no carriage-return progress bars in a log
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert all("val/iou" in line for line in epochs)
    # Each line but the last says how long the rest of the fit should take at its pace.
    assert re.search(r" about \d+ s left$", epochs[0]) and "left" not in epochs[-1]
    for noise in ("Tip:", "anonymous", "Deprecat", "FLOPs", "wandb: "):
        assert noise not in output, noise
    (notice,) = [line for line in result.stdout.splitlines() if line.startswith("W&B run")]
    assert "make sync" in notice
    assert sum("parameters" in line for line in output.splitlines()) == 1


def test_time_left_reads_in_the_unit_a_person_would_use():
    from lightning_seg.console import time_left

    assert time_left(42) == "about 42 s left"
    assert time_left(12 * 60 + 10) == "about 12 min left"
    assert time_left(3 * 3600) == "about 3.0 h left"
