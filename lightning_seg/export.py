"""Export a trained network to ONNX, TorchScript or torch.export: ``lightning-seg export``.

What is exported is the network alone, in eval mode, main head only: normalised images
N x C x H x W float32 (``(pixel / 255 - mean) / std``) in, logits N x num_classes x H x W out.
The normalisation, class names, threshold and training size travel with the file (ONNX
``metadata_props``; a ``lightning_seg.json`` extra file in TorchScript and ``.pt2``), since a
deployment needs them to prepare images and read the output. TorchScript is deprecated in
current torch; its successor, a ``torch.export`` program (``.pt2``), takes H and W as multiples
of the network's stride (see :func:`export_pt2`).

Batch, height and width are dynamic. Networks that pad their input to a multiple of their stride
(U-Net, SegNet, SMP) choose the padding with a Python ``if`` on the input's shape, which tracing
and ``torch.export`` would freeze at the example size; :class:`ExportModule` therefore pads to the
stride itself, computing the pad from the input's shape in the graph, so the network's own ``if``
always sees a multiple and both sizes stay right. Networks with adaptive pooling to several bins
(PSPNet's pyramid) cannot be exported to ONNX with dynamic height and width by the current
exporter (the pooling windows would be fixed at the example size, silently wrong at others), so
for them only the batch is dynamic and H x W is fixed at the training size, which is how
``predict`` feeds them anyway (resized images or tiles).

Every file is checked before it is published: it is written to a temporary file, run (ONNX
Runtime, or the loaded TorchScript module) on random inputs at two batch sizes and two spatial
sizes (one not the example size, where dynamic), compared with PyTorch
(:mod:`lightning_seg.export_checks`), and only then renamed into place.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_seg.choices import DEFAULT_OPSET
from lightning_seg.errors import ConfigurationError, first_line
from lightning_seg.export_checks import check_sizes, onnx_runner, parity, passes, torch_runner
from lightning_seg.inference import load_task, temporary_path
from lightning_seg.parsers import export_parser
from lightning_seg.preprocessing import Preprocessing, pad_to_stride

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}


class ExportModule(nn.Module):
    """The network as exported: pads H and W to its stride in the graph, crops the logits back.

    Reflection padding, as the networks' own ``pad_to_multiple`` uses, so results equal the
    network's for every input side of at least the pad (one stride covers every case).
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.stride = int(getattr(network, "stride", 1) or 1)

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2], images.shape[-1]
        if self.stride > 1:
            images = pad_to_stride(images, self.stride)
        logits = self.network(images)
        return logits[:, :, :height, :width]


def fixed_size_reason(network: nn.Module) -> str | None:
    """Why H x W must be fixed in ONNX, or None: adaptive pooling to more than one bin, or
    timm's TensorFlow-style "same" padding (``Conv2dSame``, ``AvgPool2dSame``...: the
    EfficientNet-Lite encoders), which pads by the input size at run time; with symbolic H and
    W the exporter's shape reasoning did not finish in 15 minutes for one Lite0 U-Net."""
    for name, module in network.named_modules():
        if type(module).__name__.endswith("2dSame"):
            return f"{name} is {type(module).__name__} (padding computed from the input size)"
        if isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            size = module.output_size
            sizes = size if isinstance(size, tuple | list) else (size, size)
            if any(s not in (1, None) for s in sizes):
                return f"{name} is {type(module).__name__}({size})"
    return None


#: ONNX graph format version of these exports: bumped when inputs, outputs or their meaning change.
MODEL_VERSION = 1


def name_axes(model: Any, dynamic_spatial: bool) -> None:
    """Name the dynamic axes ``batch``, ``height``, ``width`` (the exporter calls them s0, s1...)
    on the graph's input and output, and stamp the model version."""
    import onnx_ir as ir

    for value in (*model.graph.inputs, *model.graph.outputs):
        dims = list(value.shape)
        names = {0: "batch", 2: "height", 3: "width"} if dynamic_spatial else {0: "batch"}
        for axis, name in names.items():
            dims[axis] = ir.SymbolicDim(name)
        value.shape = ir.Shape(dims)
    model.model_version = MODEL_VERSION


def export_metadata(settings: dict[str, Any], dynamic_spatial: bool, stride: int) -> dict[str, str]:
    """What a deployment needs beside the graph, as strings (JSON for lists): the checkpoint's
    preprocessing (whole, and its fields one by one) and how to read the output."""
    preprocessing: Preprocessing = settings["preprocessing"]
    size = list(preprocessing.image_size)
    return {
        "producer": "lightning_seg",
        "model": settings.get("model", ""),
        "input": "images: N x C x H x W float32, (pixel / 255 - mean) / std, RGB or grey",
        "output": "logits: N x num_classes x H x W; binary: sigmoid > threshold; else argmax",
        "preprocessing": json.dumps(preprocessing.to_dict()),
        "mean": json.dumps(list(preprocessing.mean)),
        "std": json.dumps(list(preprocessing.std)),
        "in_channels": str(preprocessing.channels),
        "num_classes": str(settings["num_classes"]),
        "class_names": json.dumps(settings["class_names"]),
        "threshold": str(settings["threshold"]),
        # Not in the graph: apply it to the thresholded mask (lightning_seg.postprocess).
        "postprocess": settings.get("postprocess", "none"),
        # Not in the graph either: the views test scored with (lightning_seg.tta).
        "tta": settings.get("tta", "none"),
        "image_size": json.dumps(size),
        "dynamic_spatial": "true" if dynamic_spatial else f"false (H x W fixed at {size})",
        "stride": str(stride),
    }


@contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, renamed onto it when the block succeeds, removed
    otherwise: a reader never sees a half-written or unchecked export."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' chatter (tracer warnings, onnx_ir notes about empty attributes)."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def prepare(network: nn.Module) -> nn.Module:
    """A copy of the network in eval mode, contiguous memory format, on the CPU."""
    network = copy.deepcopy(network).cpu().eval()
    return network.to(memory_format=torch.contiguous_format)


def export_inputs(
    network: nn.Module, settings: dict[str, Any], example_size: tuple[int, int] | None
) -> tuple[nn.Module, ExportModule, tuple[int, int], int]:
    """What every exporter starts from: the prepared network, its :class:`ExportModule`, the
    example size (the training size by default) and the input channels."""
    network = prepare(network)
    size = tuple(example_size or settings["preprocessing"].image_size)
    return network, ExportModule(network).eval(), size, settings["preprocessing"].channels


# ----------------------------------------------------------------------------- ONNX
def export_onnx(
    network: nn.Module,
    path: str | os.PathLike[str],
    settings: dict[str, Any],
    example_size: tuple[int, int] | None = None,
    opset: int = DEFAULT_OPSET,
    fixed_size: bool | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Export ``network`` to ONNX at ``path`` with the dynamo exporter; returns what was done
    (``dynamic_spatial``, ``max_abs_diff`` and ``max_abs_logit`` when checked).

    ``fixed_size`` None decides by :func:`fixed_size_reason`; True fixes H x W at
    ``example_size`` (the training size by default).
    """
    _require_onnx_export()
    if opset < 17:
        raise ConfigurationError(f"--opset must be 17 or more, not {opset}")
    path = Path(path)
    network, module, size, channels = export_inputs(network, settings, example_size)
    reason = fixed_size_reason(network) if fixed_size is None else None
    dynamic_spatial = not (fixed_size or reason)
    example = torch.randn(2, channels, *size)
    program = _onnx_program(module, example, dynamic_spatial, opset)
    program.model.metadata_props.update(export_metadata(settings, dynamic_spatial, module.stride))
    result: dict[str, Any] = {"dynamic_spatial": dynamic_spatial, "fixed_reason": reason}
    with _temporary(path) as tmp:
        with _quiet_exporter():
            # One self-contained file (no external ``.data`` beside it): renamed atomically,
            # and fine below ONNX's 2 GB protobuf limit, far above these networks.
            program.save(str(tmp), external_data=False)
        if check:
            sizes = check_sizes(size, dynamic_spatial, module.stride)
            result.update(_checked("onnx", onnx_runner(tmp), network, channels, sizes))
    return result


def _require_onnx_export() -> None:
    """Fail before the slow export when the exporter or ONNX Runtime (for the check) is missing."""
    try:
        import onnxruntime  # noqa: F401
        from torch.export import Dim  # noqa: F401
    except ImportError as error:
        raise ConfigurationError(
            f"ONNX export needs the export extra (pip install 'lightning-seg[export]'): {error}"
        ) from None


def _onnx_program(
    module: ExportModule, example: Tensor, dynamic_spatial: bool, opset: int
) -> torch.onnx.ONNXProgram:
    """The dynamo exporter's program for ``module``, batch (and H x W) dynamic, axes named."""
    from torch.export import Dim

    axes = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC} if dynamic_spatial else {0: Dim.DYNAMIC}
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes={"images": axes},
            opset_version=opset,
            verbose=False,
        )
    assert program is not None
    name_axes(program.model, dynamic_spatial)
    return program


def _checked(
    label: str,
    run: Callable[[np.ndarray], np.ndarray],
    network: nn.Module,
    in_channels: int,
    sizes: list[tuple[int, int]],
) -> dict[str, Any]:
    """The parity of a written file (``run`` runs it) with ``network``: what the result
    records, or a refusal when it does not pass (the file is then never published)."""
    difference, scale = parity(run, network, in_channels, sizes, seed=1)
    if not passes(difference, scale):
        raise ConfigurationError(
            f"{label} parity check failed: max |{label} - torch| = {difference:.3g} "
            f"(largest logit {scale:.3g}) at sizes {sizes}; nothing was written"
        )
    return {"max_abs_diff": difference, "max_abs_logit": scale, "sizes": sizes}


# ----------------------------------------------------------------------------- TorchScript
def export_torchscript(
    network: nn.Module,
    path: str | os.PathLike[str],
    settings: dict[str, Any],
    example_size: tuple[int, int] | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Export ``network`` to TorchScript at ``path``; returns how (``method``) and the parity.

    Tracing records the in-graph padding of :class:`ExportModule` with dynamic sizes; whether the
    rest of a network traces shape-independently is checked at a second size, and when it does
    not (or tracing fails: SegNet's unpooling) scripting is tried. A network that neither keeps
    right at both sizes is refused with the reasons.
    """
    path = Path(path)
    network, module, size, channels = export_inputs(network, settings, example_size)
    sizes = check_sizes(size, True, module.stride)
    failures: list[str] = []
    for method in ("trace", "script"):
        try:
            with _quiet_exporter(), torch.no_grad():
                if method == "trace":
                    example = torch.randn(2, channels, *size)
                    compiled = torch.jit.trace(module, example, check_trace=False)
                else:
                    compiled = torch.jit.script(module)
        except Exception as error:  # the exporters raise anything from deep inside
            failures.append(f"{method}: {first_line(error, 200)}")
            continue
        difference, scale = parity(torch_runner(compiled), network, channels, sizes)
        if passes(difference, scale):
            break
        failures.append(f"{method}: differs by {difference:.3g} at another input size")
    else:
        raise ConfigurationError(
            f"TorchScript cannot export this network with dynamic sizes ({'; '.join(failures)}); "
            "use --format onnx"
        )
    metadata = export_metadata(settings, True, module.stride)
    result: dict[str, Any] = {"method": method, "dynamic_spatial": True}
    # Quiet: this torch warns that TorchScript is deprecated.
    with _temporary(path) as tmp, _quiet_exporter():
        torch.jit.save(
            compiled, str(tmp), _extra_files={"lightning_seg.json": json.dumps(metadata)}
        )
        if check:
            loaded = torch.jit.load(str(tmp), map_location="cpu")
            result.update(_checked("torchscript", torch_runner(loaded), network, channels, sizes))
    return result


# ----------------------------------------------------------------------------- torch.export
def multiples(stride: int) -> str:
    """The sides a dynamic ``.pt2`` program takes, in words."""
    return f"H and W multiples of {stride}, from {2 * stride}"


def stride_multiple(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """``size`` rounded up to multiples of ``stride``, at least two of them: the example a
    dynamic ``.pt2`` export traces (``torch.export`` specialises sides that are one block)."""
    return (max(2, -(-size[0] // stride)) * stride, max(2, -(-size[1] // stride)) * stride)


def other_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """A second size a dynamic ``.pt2`` program must take: other multiples, not square."""
    height, width = stride_multiple((size[0] * 3 // 4, size[1] + 1), stride)
    return height, width + stride


def _pt2_program(
    module: ExportModule, example: Tensor, dynamic_spatial: bool
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``module``: batch dynamic and, where ``dynamic_spatial``, H and W any
    multiples of the stride. Declared as multiples, the in-graph padding is known to be zero, so
    no guard ties the program to the example's size (with free H and W, ``F.pad``'s output
    size leaves a guard that holds only for sizes padded like the example's)."""
    from torch.export import Dim

    axes: dict[int, Any] = {0: Dim.DYNAMIC}
    if dynamic_spatial:
        stride = module.stride
        axes[2] = stride * Dim("height_blocks", min=2) if stride > 1 else Dim("height", min=2)
        axes[3] = stride * Dim("width_blocks", min=2) if stride > 1 else Dim("width", min=2)
    with _quiet_exporter(), torch.no_grad():
        return torch.export.export(
            module, (example,), dynamic_shapes={"images": axes}, strict=False
        )


def export_pt2(
    network: nn.Module,
    path: str | os.PathLike[str],
    settings: dict[str, Any],
    example_size: tuple[int, int] | None = None,
    fixed_size: bool | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Export ``network`` with ``torch.export`` (TorchScript's successor) to a ``.pt2`` archive
    at ``path``; the metadata travels as the archive's extra file ``lightning_seg.json``. Load
    it with ``torch.export.load(path)`` and call ``.module()``.

    The batch is dynamic, and so are H and W as multiples of the network's stride (pad images up
    to it, as the metadata's ``stride`` says), unless :func:`fixed_size_reason` or
    ``fixed_size`` fixes them at ``example_size`` (the training size by default: what ``predict``
    feeds, resized images or tiles), or the exporter cannot keep them free (then it says why).
    """
    path = Path(path)
    network, module, size, channels = export_inputs(network, settings, example_size)
    reason = fixed_size_reason(network) if fixed_size is None else None
    dynamic_spatial = not (fixed_size or reason)
    program = None
    if dynamic_spatial:
        traced = stride_multiple(size, module.stride)
        try:
            program = _pt2_program(module, torch.randn(2, channels, *traced), True)
            with torch.no_grad():  # a guard on H or W can also surface only when run
                program.module()(torch.randn(1, channels, *other_size(traced, module.stride)))
            size = traced
        except Exception as error:  # fixed at the example's size instead, saying why
            program = None
            reason = "torch.export could not keep H and W free: " + first_line(error, 120)
            dynamic_spatial = False
    if program is None:
        try:
            program = _pt2_program(module, torch.randn(2, channels, *size), False)
        except Exception as error:  # the exporter raises anything from deep inside
            raise ConfigurationError(
                f"torch.export cannot export this network ({first_line(error, 200)}); "
                "use --format onnx"
            ) from None
    metadata = export_metadata(settings, dynamic_spatial, module.stride)
    if dynamic_spatial:
        metadata["dynamic_spatial"] = f"true ({multiples(module.stride)})"
    result: dict[str, Any] = {
        "dynamic_spatial": dynamic_spatial, "fixed_reason": reason, "size": list(size),
        "stride": module.stride,
    }  # fmt: skip
    with _temporary(path) as tmp, _quiet_exporter():
        torch.export.save(
            program, str(tmp), extra_files={"lightning_seg.json": json.dumps(metadata)}
        )
        if check:
            loaded = torch.export.load(str(tmp)).module()
            sizes = [size, other_size(size, module.stride)] if dynamic_spatial else [size]
            result.update(_checked("pt2", torch_runner(loaded), network, channels, sizes))
    return result


# ----------------------------------------------------------------------------- command
def export_command(argv: list[str]) -> int:
    """``lightning-seg export``: writes the file, prints its path and the parity check."""
    args = export_parser().parse_args(argv)
    task, settings = load_task(args.ckpt, "cpu")
    output = Path(args.output or Path(args.ckpt).with_suffix(SUFFIXES[args.format]))
    size = tuple(args.size) if args.size else None
    if args.format == "onnx":
        result = export_onnx(
            task.network,
            output,
            settings,
            size,
            args.opset,
            fixed_size=True if args.fixed_size else None,
            check=args.check,
        )
    elif args.format == "pt2":
        result = export_pt2(
            task.network,
            output,
            settings,
            size,
            fixed_size=True if args.fixed_size else None,
            check=args.check,
        )
    else:
        result = export_torchscript(task.network, output, settings, size, check=args.check)
    how = f" ({result['method']})" if "method" in result else ""
    print(f"exported {args.format}{how}: {output}")
    if not result["dynamic_spatial"]:
        why = f": {result['fixed_reason']}" if result.get("fixed_reason") else ""
        fixed = result.get("size") or size or list(settings["preprocessing"].image_size)
        print(f"note: H x W fixed at {list(fixed)}, batch dynamic{why}")
    elif args.format == "pt2":
        print(f"note: batch, H and W dynamic: {multiples(result['stride'])} (pad images up to one)")
    if "max_abs_diff" in result:
        sizes = ", ".join(f"{h}x{w}" for h, w in result["sizes"])
        print(
            f"parity: max |{args.format} - torch| = {result['max_abs_diff']:.2e} "
            f"(largest |logit| {result['max_abs_logit']:.2f}) at batch 1 and 3, sizes {sizes}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(export_command(sys.argv[1:]))
