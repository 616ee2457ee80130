"""The fastest safe training precision for the hardware a run lands on.

bf16 autocast only pays where the hardware multiplies bf16 natively: measured on 2-core Xeons, a
U-Net training step ran 2.5x faster in ``bf16-mixed`` on a CPU with AMX-BF16, but 0.8x (slower
than fp32) on one with only AVX512-BF16, where oneDNN emulates much of the work. A recipe that
names ``bf16-mixed`` is therefore fast on one machine and slow on the next; ``auto_precision``
lets a recipe ask for "the fast one" and records the choice in the run's config.
"""

from __future__ import annotations

import torch


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (the units that make bf16 matmuls and convolutions fast)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


def uses_cuda(accelerator: object) -> bool:
    """Whether a Trainer with this ``accelerator`` setting would run on a CUDA GPU."""
    name = str(accelerator or "auto").lower()
    return name in ("cuda", "gpu") or (name == "auto" and torch.cuda.is_available())


def fast_precision(accelerator: object = "auto") -> str:
    """``bf16-mixed`` on CUDA GPUs with bf16 and on CPUs with AMX; ``16-mixed`` on older GPUs;
    ``32-true`` elsewhere."""
    if uses_cuda(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_amx() else "32-true"
