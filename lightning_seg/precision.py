"""The fastest safe training precision for the hardware a run lands on.

bf16 autocast only pays where the hardware multiplies bf16 natively, and how much depends on the
CPU and on oneDNN's kernels for it: on 2-core CPUs a SegNet/U-Net training step ran 2.5x faster in
``bf16-mixed`` with AMX-BF16 (Xeon), 1.7-1.8x with AVX512-BF16 and no AMX (AMD EPYC, torch 2.15),
but 0.8x on an earlier CPU with AVX512-BF16 only. A recipe that names ``bf16-mixed`` is therefore
fast on one machine and slow on the next; ``auto_precision`` lets a recipe ask for "the fast one"
and records the choice in the run's config. Where the answer is not known from the CPU's features
(AVX512-BF16 without AMX) it is measured: a few convolution steps in each precision, about a
second, once per process tree (:data:`SPEEDUP_VARIABLE` carries it to DDP's worker processes).
"""

from __future__ import annotations

import os
import time

import torch

from lightning_seg.errors import ConfigurationError

#: Environment variable holding the measured bf16 speed-up, so every process of a run (DDP ranks,
#: spawned after the first measured it) chooses the same precision; set it to skip the probe.
SPEEDUP_VARIABLE = "LIGHTNING_SEG_BF16_SPEEDUP"
#: bf16 must be this much faster than fp32 to be chosen (it costs a little accuracy headroom).
MIN_SPEEDUP = 1.2


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (the units that make bf16 matmuls and convolutions fast)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe()) if probe is not None else False


def cpu_has_avx512_bf16() -> bool:
    """Whether this CPU has AVX512-BF16 instructions (bf16 dot products, without AMX's tiles)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe()) if probe is not None else False


def _conv_net_and_images() -> tuple[torch.nn.Module, torch.Tensor]:
    """Two 3x3 convolutions on a small channels-last batch: the bulk of a training step."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(32, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1),
    ).to(memory_format=torch.channels_last)
    images = torch.randn(4, 32, 96, 96).contiguous(memory_format=torch.channels_last)
    return net, images


def _step_seconds(net: torch.nn.Module, images: torch.Tensor, bf16: bool) -> float:
    """Wall time of one forward + backward, in bf16 autocast or fp32."""
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = net(images).float().square().mean()
    loss.backward()
    return time.perf_counter() - start


def probe_speedup(rounds: int = 5) -> float:
    """fp32 over bf16 time of a convolution training step, from the fastest of ``rounds``
    alternating pairs after one warm-up of each (oneDNN builds its kernels on first use).

    Alternating and taking each precision's fastest step keeps a burst of other work on the
    two cores from landing on one precision only: a median of three steps timed fp32 first,
    bf16 after, once read 0.49x on a CPU where eight other probes read 1.56-1.76x.
    """
    net, images = _conv_net_and_images()
    for bf16 in (False, True):
        _step_seconds(net, images, bf16)
    fp32, bf16 = [], []
    for _ in range(rounds):
        fp32.append(_step_seconds(net, images, bf16=False))
        bf16.append(_step_seconds(net, images, bf16=True))
    return min(fp32) / min(bf16)


def measured_bf16_speedup() -> float:
    """fp32 over bf16-autocast time of a convolution training step on this CPU (>1: bf16 is
    faster); measured once per process tree, then read from :data:`SPEEDUP_VARIABLE`."""
    known = os.environ.get(SPEEDUP_VARIABLE)
    if known:
        try:
            return float(known)
        except ValueError:
            raise ConfigurationError(
                f"{SPEEDUP_VARIABLE}={known!r} is not a number (bf16 speed-up over fp32, e.g. 1.7)"
            ) from None
    with torch.random.fork_rng(devices=[]):  # the probe must not move the run's seeded RNG
        speedup = probe_speedup()
    os.environ[SPEEDUP_VARIABLE] = f"{speedup:.2f}"
    return speedup


def uses_cuda(accelerator: object) -> bool:
    """Whether a Trainer with this ``accelerator`` setting would run on a CUDA GPU."""
    name = str(accelerator or "auto").lower()
    return name in ("cuda", "gpu") or (name == "auto" and torch.cuda.is_available())


def fast_precision(accelerator: object = "auto") -> str:
    """``bf16-mixed`` on CUDA GPUs with bf16, on CPUs with AMX and on CPUs with AVX512-BF16
    where it measures at least :data:`MIN_SPEEDUP` times as fast; ``16-mixed`` on older GPUs;
    ``32-true`` elsewhere."""
    if uses_cuda(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if cpu_has_amx():
        return "bf16-mixed"
    if cpu_has_avx512_bf16() and measured_bf16_speedup() >= MIN_SPEEDUP:
        return "bf16-mixed"
    return "32-true"
