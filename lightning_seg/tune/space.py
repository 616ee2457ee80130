"""The search space of a study: what is sampled, how, and what a trial optimises.

A study of experiment NAME reads ``experiments/search/NAME.yaml``::

    metric: val/iou            # the value of a trial: its best epoch's (direction: maximize)
    trials: 20                 # how many trials the study holds when done
    pruner: {name: median, n_startup_trials: 3, n_warmup_steps: 4}   # or hyperband, threshold
    sampler: {name: tpe, seed: 42}               # or random; grid when every param is categorical
    flags: ["--trainer.max_epochs=20"]                               # added to every trial
    params:
      model.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.model_args.base_channels: {type: int, low: 8, high: 32, step: 8}
      model.loss:                # a categorical's choices: a list, or labels -> values
        type: categorical
        choices: {bce: bce, bce+dice: bce+dice, focal+dice: [{name: focal}, {name: dice}]}

Each parameter's key is a command-line flag (``--model.optimizer.init_args.lr=...``), so a trial
is ``lightning-seg fit --experiment NAME`` with the experiment's own settings, the ``flags`` and
the sampled values, in that order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_seg.errors import ConfigurationError
from lightning_seg.experiments import check_yaml, experiments_dir

KINDS = ("float", "int", "categorical")
PRUNERS = ("median", "hyperband", "threshold", "none")
SAMPLERS = ("tpe", "random", "grid")


def search_path(experiment: str) -> Path:
    return experiments_dir() / "search" / f"{experiment}.yaml"


@dataclass(frozen=True)
class Param:
    """One sampled setting: ``key`` is its flag, the rest says how Optuna draws it."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    # Categorical: labels Optuna sees (plain strings/numbers) and the value each stands for.
    choices: dict[str, Any] = field(default_factory=dict)

    def sample(self, trial: Any) -> Any:
        """The value of this parameter in ``trial`` (an ``optuna.Trial``)."""
        if self.kind == "categorical":
            return self.choices[trial.suggest_categorical(self.key, list(self.choices))]
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def value_of(self, sampled: Any) -> Any:
        """The setting an Optuna parameter value stands for (a categorical's label -> value)."""
        return self.choices[sampled] if self.kind == "categorical" else sampled


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def parse_param(key: str, spec: Any, where: Path) -> Param:
    """A :class:`Param` from its YAML, with one-line errors that name the file and the key."""
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise ConfigurationError(f"{where}: params.{key} needs type: one of {', '.join(KINDS)}")
    kind = spec["type"]
    if kind == "categorical":
        choices = spec.get("choices")
        if isinstance(choices, list) and choices:
            choices = {_label(c): c for c in choices}
        if not isinstance(choices, dict) or not choices:
            raise ConfigurationError(f"{where}: params.{key}: choices must be a list or mapping")
        return Param(key, kind, choices={str(k): v for k, v in choices.items()})
    try:
        low, high = float(spec["low"]), float(spec["high"])
        step = None if spec.get("step") is None else float(spec["step"])
    except (KeyError, TypeError, ValueError):
        raise ConfigurationError(f"{where}: params.{key} needs numbers low and high") from None
    log = bool(spec.get("log", False))
    if not low < high or (log and low <= 0) or (log and step is not None):
        raise ConfigurationError(
            f"{where}: params.{key}: need low < high (and low > 0 without step for log)"
        )
    return Param(key, kind, low, high, step, log)


@dataclass(frozen=True)
class SearchSpace:
    """What a study samples and optimises (see the module docstring for the YAML)."""

    params: tuple[Param, ...]
    metric: str = "val/iou"
    direction: str = "maximize"
    trials: int = 20
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "median"})
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "tpe", "seed": 42})
    flags: tuple[str, ...] = ()

    def sample(self, trial: Any) -> dict[str, Any]:
        """Every parameter's value in ``trial``, by flag key."""
        return {param.key: param.sample(trial) for param in self.params}

    def grid(self) -> dict[str, list[str]]:
        """Every categorical's labels, for Optuna's grid sampler."""
        return {param.key: list(param.choices) for param in self.params}

    def values(self, optuna_params: dict[str, Any]) -> dict[str, Any]:
        """The settings of a finished trial (its Optuna parameters mapped back)."""
        by_key = {param.key: param for param in self.params}
        return {k: by_key[k].value_of(v) for k, v in optuna_params.items() if k in by_key}


def load_search_space(experiment: str, path: Path | None = None) -> SearchSpace:
    """The search space of ``experiment`` (``experiments/search/NAME.yaml`` by default)."""
    path = path or search_path(experiment)
    if not path.is_file():
        raise ConfigurationError(
            f"no search space for {experiment!r}: write {path} (see lightning_seg/tune/space.py "
            "or the README's 'Hyper-parameter search')"
        )
    spec = check_yaml(path) or {}
    params = spec.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigurationError(f"{path}: params must map flag keys to their ranges")
    direction = str(spec.get("direction", "maximize"))
    if direction not in ("maximize", "minimize"):
        raise ConfigurationError(f"{path}: direction must be maximize or minimize")
    pruner = dict(spec.get("pruner") or {"name": "median"})
    sampler = dict(spec.get("sampler") or {"name": "tpe", "seed": 42})
    for what, value, names in (("pruner", pruner, PRUNERS), ("sampler", sampler, SAMPLERS)):
        if value.get("name") not in names:
            raise ConfigurationError(f"{path}: {what}.name must be one of {', '.join(names)}")
    parsed = tuple(parse_param(str(k), v, path) for k, v in params.items())
    if sampler["name"] == "grid" and any(p.kind != "categorical" for p in parsed):
        raise ConfigurationError(f"{path}: the grid sampler needs every param categorical")
    trials = spec.get("trials", 20)
    if not isinstance(trials, int) or trials < 1:
        raise ConfigurationError(f"{path}: trials must be a positive whole number")
    flags = spec.get("flags") or []
    if not isinstance(flags, list) or not all(str(f).startswith("--") for f in flags):
        raise ConfigurationError(f"{path}: flags must be a list of --key=value flags")
    return SearchSpace(
        params=parsed,
        metric=str(spec.get("metric", "val/iou")),
        direction=direction,
        trials=trials,
        pruner=pruner,
        sampler=sampler,
        flags=tuple(str(f) for f in flags),
    )
