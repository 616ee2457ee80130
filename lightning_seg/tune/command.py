"""``lightning-seg tune --experiment NAME``: run (or continue) a study, then report it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from lightning_seg.errors import ConfigurationError
from lightning_seg.experiments import experiment_path
from lightning_seg.parsers import tune_parser


def worker_command(args: argparse.Namespace, storage: str, flags: list[str]) -> list[str]:
    """The command line of one more worker process on the same study."""
    command = [sys.executable, "-m", "lightning_seg", "tune", f"--experiment={args.experiment}",
               f"--study={args.study}", f"--storage={storage}", f"--runs_dir={args.runs_dir}",
               "--no-report"]  # fmt: skip
    if args.trials is not None:
        command.append(f"--trials={args.trials}")
    if args.search is not None:
        command.append(f"--search={args.search}")
    return [*command, *flags]


def tune_command(argv: list[str]) -> int:
    """Run the study's remaining trials (``--n-jobs`` processes), then report; 0 when the study
    holds a completed trial."""
    args, flags = tune_parser().parse_known_args(argv)
    if unknown := [f for f in flags if f.startswith("-") and not f.startswith("--")]:
        raise ConfigurationError(f"tune: unknown option(s) {' '.join(unknown)}")
    if args.n_jobs < 1 or (args.trials is not None and args.trials < 1):
        raise ConfigurationError("tune: --n-jobs and --trials must be at least 1")
    experiment_path(args.experiment)  # an unknown experiment is one line before any trial
    from lightning_seg.tune.report import report
    from lightning_seg.tune.space import load_search_space
    from lightning_seg.tune.study import STOP, default_storage, open_study, optimize, trial_flags

    space = load_search_space(args.experiment, args.search)
    args.study = args.study or args.experiment
    storage = args.storage or default_storage(args.runs_dir, args.study)
    study = open_study(args.study, storage, space)
    total = args.trials or space.trials
    if not args.report:
        base = trial_flags(args.experiment, args.study, args.runs_dir, [*space.flags, *flags])
        others = [
            subprocess.Popen(worker_command(args, storage, flags)) for _ in range(args.n_jobs - 1)
        ]
        try:
            optimize(study, space, base, total)
        except KeyboardInterrupt:
            STOP.requested = True
        except Exception:
            # A Ctrl-C that lands inside the storage's commit surfaces as a database error
            # ('database is locked') and then optuna's own assertion: still the person's stop.
            if not STOP.requested:
                raise
        finally:
            codes = [worker.wait() for worker in others]
        if STOP.requested:
            print(f"stopped: run the same command again to continue study {args.study}")
            return 130
        if any(codes):
            print(f"note: {sum(map(bool, codes))} worker process(es) stopped with an error")
    if args.no_report:
        return 0
    return report(args.experiment, study, Path(args.runs_dir) / "tune" / args.study)
