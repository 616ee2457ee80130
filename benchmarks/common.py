"""What the benchmark scripts share: a one-line description of the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from lightning_seg.precision import cpu_has_amx


def machine() -> str:
    """CPU model, cores, torch version and threads, Python: enough to compare tables."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # Whether bf16 is fast here decides the precision auto_precision picks (and the speed).
    amx = "with" if cpu_has_amx() else "without"
    return (
        f"{cpu} ({amx} AMX-BF16), {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )
