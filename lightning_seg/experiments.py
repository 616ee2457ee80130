"""Named experiments: ``--experiment NAME`` is ``experiments/NAME.yaml``, checked before use."""

from __future__ import annotations

import os
from pathlib import Path

from lightning_seg.errors import ConfigurationError


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


def check_yaml(path: Path) -> None:
    """A YAML syntax error is one line naming the file, line and column, before any parsing."""
    import yaml

    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigurationError(f"{path}{where}: YAML syntax error: {problem}") from None


def expand_experiment(argv: list[str]) -> list[str]:
    """Insert ``--config experiments/NAME.yaml`` after the subcommand for ``--experiment NAME``,
    so that every later flag overrides the experiment's YAML."""
    for i, arg in enumerate(argv):
        if arg == "--experiment" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--experiment="):
            name = arg.split("=", 1)[1]
        else:
            continue
        if not argv or argv[0].startswith("-"):
            return argv
        return [argv[0], "--config", str(experiment_path(name)), *argv[1:]]
    return argv
