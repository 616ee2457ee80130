"""What the benchmark scripts share: a one-line description of the machine they ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from lightning_seg.precision import cpu_has_amx, cpu_has_avx512_bf16


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
    return (
        f"{cpu} ({bf16_support()}), {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def bf16_support() -> str:
    """The CPU's bf16 instructions, which decide the precision auto_precision picks and so the
    speed: two CPUs with the same model name (an AMD EPYC, say) can differ here by 2x."""
    if cpu_has_amx():
        return "with AMX-BF16"
    if cpu_has_avx512_bf16():
        return "with AVX512-BF16, without AMX"
    return "without AMX-BF16 or AVX512-BF16"
