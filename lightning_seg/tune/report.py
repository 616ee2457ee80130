"""What a study gives a person: the best trial, an experiment that reproduces it, and plots.

``experiments/<name>_tuned.yaml`` lists the searched experiment in its ``defaults`` and holds the
best trial's flags as YAML, so ``make train EXP=<name>_tuned`` runs that trial's exact command
line again (same seed, same result). The optimisation history and the parameter importances
(Optuna's PED-ANOVA, which needs no extra package) are saved as PNGs beside the study.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from lightning_seg.experiments import experiments_dir

# Flags of a trial that belong to the search, not to the experiment it reproduces.
SEARCH_ONLY = ("--experiment", "--runs_dir", "--tracking.group")


def counts(study: optuna.Study) -> Counter[str]:
    """Trials per state (complete, pruned, fail, running, waiting), for the report line."""
    return Counter(trial.state.name.lower() for trial in study.get_trials(deepcopy=False))


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if complete else None


def flags_to_config(flags: list[str]) -> dict[str, Any]:
    """``["--trainer.max_epochs=3", "--model.loss", "bce"]`` -> nested YAML settings."""
    config: dict[str, Any] = {}
    i = 0
    while i < len(flags):
        item = flags[i]
        if "=" in item:
            key, raw = item[2:].split("=", 1)
        else:
            key, raw = item[2:], flags[i + 1] if i + 1 < len(flags) else "true"
            i += 1
        i += 1
        if f"--{key}" in SEARCH_ONLY:
            continue
        value = yaml.safe_load(raw) if raw != "" else ""
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def tuned_yaml(experiment: str, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> Path:
    """Write ``experiments/<experiment>_tuned.yaml`` reproducing ``trial``; return its path."""
    path = experiments_dir() / f"{experiment}_tuned.yaml"
    settings = {"defaults": [f"{experiment}.yaml"], **flags_to_config(trial.user_attrs["flags"])}
    params = "".join(f"#   {k} = {v}\n" for k, v in trial.params.items())
    header = (
        f"# Best trial {trial.number} of study {study.study_name!r}: {trial.value:.4f}, with\n"
        f"{params}# Written by `lightning-seg tune --experiment {experiment}`; train it with\n"
        f"#   make train EXP={experiment}_tuned\n"
    )
    path.write_text(header + yaml.safe_dump(settings, sort_keys=False))
    return path


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """The optimisation history and, with two or more finished trials, the importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    plots = [("optimization_history.png", optuna_plots.plot_optimization_history)]
    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= 2:
        plots.append(("param_importances.png", optuna_plots.plot_param_importances))
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as error:
                print(f"note: no {name} ({error})")
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes[0].figure
        figure.tight_layout()
        figure.savefig(folder / name, dpi=110)
        plt.close(figure)
        written.append(folder / name)
    return written


def report(experiment: str, study: optuna.Study, plots_dir: Path) -> int:
    """Print the study's outcome, write the tuned experiment and the plots; 0 when a trial
    completed, 1 when none did (nothing to reproduce)."""
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts(study).items()))
    print(f"study {study.study_name}: {states or 'no trials'}")
    trial = best_trial(study)
    if trial is None:
        print("no trial completed yet: nothing to report")
        return 1
    print(f"best trial {trial.number}: value {trial.value:.4f}")
    for key, value in trial.params.items():
        print(f"  {key} = {value}")
    if run_dir := trial.user_attrs.get("run_dir"):
        print(f"  run folder: {run_dir}")
    print(f"tuned experiment: {tuned_yaml(experiment, study, trial)}")
    for path in save_plots(study, plots_dir):
        print(f"plot: {path}")
    return 0
