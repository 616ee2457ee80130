"""Running a study: Optuna's storage, sampler and pruner, and one trial as one normal fit.

A trial is exactly what ``make train`` runs (:func:`lightning_seg.cli.run_cli` with the same
flags), plus one callback that cannot be written in YAML: Optuna's Lightning pruning hook, which
reports ``val/iou`` after every validation and stops a trial the pruner calls unpromising. So a
trial has its run folder, checkpoints, ``summary.json`` and W&B run (grouped under the study's
name, its config holding the sampled values), and a tuned result reproduces with the same seed.

The study lives in a storage: a SQLite file under ``runs/tune/`` unless ``--storage`` names a
database URL that several processes or machines share (Optuna's distributed mode: each worker
asks the storage for its next trial). Workers send heartbeats; a trial whose worker was killed
is marked failed by the next worker and run again once, so stopping and restarting continues
the same study.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from lightning_seg.errors import ConfigurationError, first_line
from lightning_seg.tune.space import SearchSpace

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
# Seconds between a running trial's heartbeats, and after which a silent one counts as dead.
HEARTBEAT_S, GRACE_S = 30, 120


def default_storage(runs_dir: str | Path, study: str) -> str:
    path = Path(runs_dir).resolve() / "tune" / f"{study}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_storage(url: str, attempts: int = 5) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats (dead workers' trials fail and are retried once); SQLite
    waits for a lock rather than failing when two workers write at the same moment.

    Workers started together on a new database race to create its tables; the loser sees
    "already exists" and simply opens the storage again, now complete."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(1, attempts + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=retry,
                )
        except Exception as error:  # bad URL, missing driver, unreachable server, a race
            text = str(error).strip()
            racing = any(m in text for m in ("already exists", "UNIQUE constraint"))
            if not racing or attempt == attempts:
                raise ConfigurationError(
                    f"cannot open study storage {url}: {first_line(error)}"
                ) from None
            time.sleep(0.5 * attempt)
    raise ValueError("attempts must be at least 1")


def make_pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    options = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] == "median":
        return optuna.pruners.MedianPruner(**options)
    if spec["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(**options)
    if spec["name"] == "threshold":  # e.g. stop trials whose val/iou stays below 0.2
        return optuna.pruners.ThresholdPruner(**options)
    return optuna.pruners.NopPruner()


def make_sampler(space: SearchSpace) -> optuna.samplers.BaseSampler:
    spec = space.sampler
    options = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] == "random":
        return optuna.samplers.RandomSampler(**options)
    if spec["name"] == "grid":
        return optuna.samplers.GridSampler(space.grid(), **options)
    return optuna.samplers.TPESampler(**options)


def open_study(
    name: str,
    storage: str,
    space: SearchSpace,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """The study ``name`` in ``storage``, created on first use and continued afterwards."""
    try:
        return optuna.create_study(
            study_name=name,
            storage=open_storage(storage),
            direction=space.direction,
            sampler=make_sampler(space),
            pruner=pruner or make_pruner(space.pruner),
            load_if_exists=True,
        )
    except TypeError as error:
        raise ConfigurationError(f"bad pruner or sampler options: {error}") from None


class TrialPruning(PyTorchLightningPruningCallback):
    """Optuna's pruning hook, which also records the trial's run folder as soon as it exists
    (a pruned trial never reaches the end of fit, where the summary is written)."""

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_fit_start(trainer, pl_module)
        self._trial.set_user_attr("run_dir", str(trainer.default_root_dir))


def finish_wandb() -> None:
    """End a W&B run that a pruned or crashed trial left open, so the next trial starts its own."""
    import wandb

    if wandb.run is not None:
        wandb.finish()


def trial_flags(experiment: str, study: str, runs_dir: str | Path, flags: list[str]) -> list[str]:
    """The ``fit`` command line of a trial, before its sampled values."""
    return ["fit", f"--experiment={experiment}", f"--runs_dir={runs_dir}",
            f"--tracking.group={study}", *flags]  # fmt: skip


def run_trial(trial: optuna.Trial, space: SearchSpace, base: list[str], study: str) -> float:
    """Fit one sampled configuration and return its metric; pruned and failed trials raise."""
    from lightning_seg.cli import flag, run_cli

    values = space.sample(trial)
    argv = [*base, *(flag(k, v) for k, v in values.items())]
    trial.set_user_attr("flags", argv[1:])
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    try:
        cli = run_cli(argv, callbacks=[TrialPruning(trial, space.metric)])
    except optuna.TrialPruned:
        raise
    except SystemExit as error:
        if STOP.requested:  # Ctrl-C: Lightning shut the fit down and exited; stop the study
            raise KeyboardInterrupt from None
        # Otherwise the CLI refused the sampled flags (it printed why).
        trial.set_user_attr("error", f"the command line was refused (exit status {error.code})")
        raise RuntimeError(f"trial {trial.number}: the command line was refused") from None
    except BaseException as error:
        trial.set_user_attr("error", f"{type(error).__name__}: {first_line(error, empty='')}"[:500])
        raise
    finally:
        finish_wandb()
    summary = cli.summary.summary if cli.summary is not None else {}
    trial.set_user_attr("run_dir", summary.get("run_dir", ""))
    trial.set_user_attr("best_checkpoint", summary.get("best_checkpoint", ""))
    value = summary.get(space.metric)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise RuntimeError(f"the trial's fit gave no {space.metric}")
    return float(value)


class StopRequest:
    """Ctrl-C while a trial trains: Lightning catches the interrupt, ignores further ones and
    exits the fit; this remembers that the person asked to stop, so the study stops too (the
    trial is recorded as failed) instead of going on with the next trial."""

    requested = False

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        def interrupt(signum: int, frame: Any) -> None:
            self.requested = True
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, interrupt)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


STOP = StopRequest()


def stop_when_asked(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """After each trial: a Ctrl-C that landed where it could not interrupt (Python ignores an
    exception raised in some clean-up code) still stops the study."""
    if STOP.requested:
        study.stop()


def remaining(study: optuna.Study, total: int) -> int:
    """Trials still to run for the study to hold ``total`` finished (complete or pruned)."""
    return max(0, total - len(study.get_trials(deepcopy=False, states=DONE)))


def optimize(study: optuna.Study, space: SearchSpace, base: list[str], total: int) -> None:
    """Run trials until the study holds ``total`` finished ones (other workers' count too); a
    crashed trial is recorded as failed with its error and the study goes on."""
    todo = remaining(study, total)
    if todo == 0:
        return
    stop = optuna.study.MaxTrialsCallback(total, states=DONE)
    with warnings.catch_warnings(), STOP.watching():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(
            lambda trial: run_trial(trial, space, base, study.study_name),
            n_trials=todo,
            callbacks=[stop, stop_when_asked],
            catch=(Exception,),
            gc_after_trial=True,
        )
