"""The benchmark scripts still run (they measure; these only check they do not rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
