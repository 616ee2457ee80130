"""The configuration files a command runs with: named experiments (``--experiment NAME`` is
``experiments/NAME.yaml``, checked before use) and, for evaluating a checkpoint, its run's
``config.yaml``.

An experiment is composed, not copied: its top-level ``defaults`` lists shared files (paths
relative to the experiments folder, e.g. ``base/ph2.yaml``, which may list their own), applied
in order before the experiment itself, so the experiment holds only what defines it. They
become ``--config`` files in that order; LightningCLI merges them (later files win, a
``class_path`` left out keeps the earlier class and overrides only the ``init_args`` given) and
``--print_config`` shows the whole result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_seg.errors import ConfigurationError, first_line


def experiments_dir() -> Path:
    """``$LIGHTNING_SEG_EXPERIMENTS``, else ``./experiments``, else the one beside the package."""
    if env := os.environ.get("LIGHTNING_SEG_EXPERIMENTS"):
        return Path(env)
    local = Path.cwd() / "experiments"
    return local if local.is_dir() else Path(__file__).resolve().parent.parent / "experiments"


def available_experiments() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml") if not p.stem.startswith("_"))


def experiment_path(name: str) -> Path:
    """The YAML of a named experiment; an unknown name lists the available ones."""
    path = experiments_dir() / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(available_experiments()) or "(none)"
        raise ConfigurationError(
            f"unknown experiment {name!r} (no {path}); available experiments: {names}"
        )
    check_yaml(path)
    return path


def composed_files(path: Path, seen: tuple[Path, ...] = ()) -> list[Path]:
    """``path``'s ``defaults`` (each with its own, depth first), then ``path`` itself."""
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigurationError(f"experiment defaults form a cycle: {chain}")
    defaults = (check_yaml(path) or {}).get("defaults") or []
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise ConfigurationError(f"{path}: defaults must be a list of YAML file paths")
    files: list[Path] = []
    for entry in defaults:
        base = experiments_dir() / entry
        if not base.is_file():
            raise ConfigurationError(f"{path}: defaults names {entry!r}, but {base} does not exist")
        files += [f for f in composed_files(base, (*seen, path)) if f not in files]
    return [*files, path]


def check_yaml(path: Path) -> dict | None:
    """The parsed YAML mapping; a syntax error is one line naming the file, line and column,
    before any parsing by the CLI."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or first_line(error)
        raise ConfigurationError(f"{path}{where}: YAML syntax error: {problem}") from None
    return loaded if isinstance(loaded, dict) else None


def expand_experiment(argv: list[str]) -> list[str]:
    """Insert ``--config`` for each file of experiment NAME (its defaults, then
    ``experiments/NAME.yaml``) after the subcommand, so that every later flag overrides them."""
    for i, arg in enumerate(argv):
        if arg == "--experiment" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--experiment="):
            name = arg.split("=", 1)[1]
        else:
            continue
        if not argv or argv[0].startswith("-"):
            return argv
        configs = [
            arg for f in composed_files(experiment_path(name)) for arg in ("--config", str(f))
        ]
        return [argv[0], *configs, *argv[1:]]
    return argv


EVALUATING = ("validate", "test", "predict")


def option(argv: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``argv`` (the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
    return value


def checkpoint_run_dir(ckpt_path: str | Path) -> Path | None:
    """The run folder a checkpoint was written into (``<run>/checkpoints/x.ckpt``), if any."""
    run_dir = Path(ckpt_path).resolve().parent.parent
    return run_dir if (run_dir / "config.yaml").is_file() else None


def with_checkpoint_config(argv: list[str]) -> list[str]:
    """``test --ckpt_path C`` without an experiment or config evaluates C with the configuration
    of the run that made it (its ``config.yaml``): a PH2 checkpoint is tested on PH2, never on
    the default synthetic data. Without that file it must be told which experiment."""
    if not argv or argv[0] not in EVALUATING:
        return argv
    ckpt_path = option(argv, "--ckpt_path")
    if not ckpt_path or option(argv, "--config") or option(argv, "--experiment"):
        return argv
    if not Path(ckpt_path).is_file():
        raise ConfigurationError(f"checkpoint not found: {ckpt_path}")
    run_dir = checkpoint_run_dir(ckpt_path)
    if run_dir is None:
        raise ConfigurationError(
            f"{ckpt_path} is not inside a run folder (<run>/checkpoints/) with a config.yaml, so "
            "its data is unknown: name it with --experiment NAME (or --config run.yaml)"
        )
    return [argv[0], "--config", str(run_dir / "config.yaml"), *argv[1:]]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config to dotted keys, dropping ``init_args`` so keys stay readable.

    ``{"model": {"init_args": {"loss": "bce"}}}`` -> ``{"model.loss": "bce"}``.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = prefix if key == "init_args" else f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def network_label(model: Any, model_args: Mapping[str, Any] | None = None) -> str:
    """What a run trained, readable in a table: ``smp`` alone names every SMP architecture and
    encoder alike, so ``smp FPN tf_efficientnet_lite2`` (SMP's defaults where unset),
    ``pspnet resnet50``, ``ensemble: smp Unet ... + smp Unet ...``, else the network's name."""
    args = dict(model_args or {})
    if model == "smp":
        encoder = str(args.get("encoder_name", "resnet34")).removeprefix("tu-")
        return f"smp {args.get('arch', 'Unet')} {encoder}"
    if model == "pspnet" and args.get("encoder"):
        return f"pspnet {str(args['encoder']).removeprefix('tu-')}"
    if model == "ensemble":
        members = [m for m in args.get("members") or [] if isinstance(m, Mapping)]
        labels = [network_label(m.get("model"), {k: v for k, v in m.items() if k != "model"})
                  for m in members]  # fmt: skip
        return "ensemble: " + " + ".join(labels) if labels else "ensemble"
    return str(model)
