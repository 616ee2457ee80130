"""The parity check of ``lightning-seg export``: an exported file must compute what PyTorch does.

Every export is run on random inputs at two batch sizes and, where H x W is dynamic, at a second
spatial size (no multiple of the stride for ONNX and TorchScript, which pad in the graph; another
multiple for ``.pt2``, which takes only those), and compared with the network it came from;
:mod:`lightning_seg.export` publishes a file only when the difference passes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from lightning_seg.errors import ConfigurationError

# Largest accepted |exported - PyTorch| in float32, relative to max(1, max |logit|).
TOLERANCE = 1e-4


def check_sizes(
    example: tuple[int, int], dynamic_spatial: bool, stride: int
) -> list[tuple[int, int]]:
    """Spatial sizes for the parity check: the example size and, where dynamic, another one that
    is no multiple of the stride (so the in-graph padding is exercised)."""
    if not dynamic_spatial:
        return [example]
    height, width = example
    other = (max(stride, height * 3 // 4) + 3, width + max(stride, 8) + 5)
    return [example, other]


def parity(
    run: Callable[[np.ndarray], np.ndarray],
    network: nn.Module,
    in_channels: int,
    sizes: list[tuple[int, int]],
    batches: tuple[int, ...] = (1, 3),
    seed: int = 0,
) -> tuple[float, float]:
    """Max |exported - PyTorch| over random inputs at each batch size and spatial size, and the
    largest |logit| (the scale the difference is judged against)."""
    generator = torch.Generator().manual_seed(seed)
    worst, scale = 0.0, 0.0
    for (height, width), batch in ((s, b) for s in sizes for b in batches):
        images = torch.randn(batch, in_channels, height, width, generator=generator)
        with torch.inference_mode():
            expected = network(images).float().numpy()
        got = run(images.numpy())
        if got.shape != expected.shape:
            raise ConfigurationError(
                f"exported model returns {got.shape} for input {tuple(images.shape)}, "
                f"PyTorch {expected.shape}"
            )
        worst = max(worst, float(np.abs(got - expected).max()))
        scale = max(scale, float(np.abs(expected).max()))
    return worst, scale


def passes(difference: float, scale: float) -> bool:
    """Whether a parity difference is within :data:`TOLERANCE` of the logits' scale."""
    return difference <= TOLERANCE * max(1.0, scale)


def onnx_runner(path: str | os.PathLike[str]) -> Callable[[np.ndarray], np.ndarray]:
    """A function that runs an exported ONNX file with ONNX Runtime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        return session.run(None, {name: images.astype(np.float32)})[0]

    return run


def torch_runner(module: nn.Module | torch.jit.ScriptModule) -> Callable[[np.ndarray], np.ndarray]:
    """A function that runs a (compiled or loaded) TorchScript module as :func:`parity` wants."""

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images)).float().numpy()

    return run
