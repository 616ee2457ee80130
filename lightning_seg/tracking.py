"""Weights & Biases set-up: offline when there are no credentials, run folders, tags."""

from __future__ import annotations

import netrc
import os
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightning.pytorch.loggers import WandbLogger

DEFAULT_PROJECT = "lightning-seg"


def wandb_host() -> str:
    """Host name of the W&B server credentials are looked up for."""
    return urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).netloc


def has_wandb_credentials() -> bool:
    """True when ``WANDB_API_KEY`` is set or ``wandb login`` stored a key in the netrc file."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        entry = netrc.netrc(path).authenticators(wandb_host())
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(entry and entry[2])


def choose_wandb_mode() -> bool:
    """Go offline when nobody said otherwise and no credentials exist; True if we switched."""
    if "WANDB_MODE" in os.environ or has_wandb_credentials():
        return False
    os.environ["WANDB_MODE"] = "offline"
    return True


def process_rank() -> int:
    """Global rank as launchers announce it (0 when not distributed)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def new_run_id() -> str:
    """A sortable, unique run id shared by the run folder and the W&B run.

    Every process of one distributed run must agree on it. Launchers that start all ranks
    themselves (torchrun, SLURM) give a job id to derive it from; with Lightning's own DDP
    launcher, rank 0 chooses the id and its child processes inherit it through the environment.
    """
    for var in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"):
        job = os.environ.get(var, "none")
        if job != "none":
            return f"{var.split('_')[0].lower()}-{job}"
    inherited = os.environ.get("LIGHTNING_SEG_RUN_ID")
    if inherited and process_rank() > 0:
        return inherited
    # Milliseconds keep two runs begun in the same second in the order they began.
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    run_id = f"{stamp}-{int(now * 1000) % 1000:03d}-{secrets.token_hex(3)}"
    os.environ["LIGHTNING_SEG_RUN_ID"] = run_id
    return run_id


def display_name(run_dir: Path, experiment: str) -> str:
    """The experiment's name, with ``-2``, ``-3``, ... for its later fit runs here.

    Fit runs are the sibling folders with a ``config.yaml`` (evaluations write none). A new run
    (no config yet) counts them all; a resumed one only those begun before it, so it keeps its
    name when it is resumed after later runs began.
    """
    own = run_dir / "config.yaml"
    began = own.stat().st_mtime_ns if own.is_file() else None
    parent = run_dir.parent
    earlier = [
        p
        for p in (parent.iterdir() if parent.is_dir() else [])
        if p.is_dir()
        and p.name != run_dir.name
        and (p / "config.yaml").is_file()
        and (began is None or (p / "config.yaml").stat().st_mtime_ns < began)
    ]
    return experiment if not earlier else f"{experiment}-{len(earlier) + 1}"


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the code that runs (``<sha>-dirty`` with local changes), None outside git."""
    cwd = path or Path(__file__).resolve().parent

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
        return result.stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def make_wandb_logger(
    run_dir: Path,
    experiment: str,
    run_id: str,
    job_type: str,
    group: str | None = None,
    tags: list[str] | None = None,
    name: str | None = None,
    resume: bool = False,
) -> WandbLogger:
    """The default logger: one W&B run per experiment run, stored inside the run folder."""
    if process_rank() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        name=name or display_name(run_dir, experiment),
        project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
        save_dir=str(run_dir),
        id=re.sub(r"[^a-z0-9]", "", run_id.lower()) + job_type[:1],
        job_type=job_type,
        group=group,
        tags=tags,
        **({"resume": "allow"} if resume else {}),
    )
    # Lightning always passes `anonymous`, which W&B now warns about whatever its value.
    logger._wandb_init.pop("anonymous", None)
    return logger


def offline_notice(logger: WandbLogger) -> str | None:
    """The one line about the W&B run: where an offline run was written and how to upload it,
    or the online run's page (W&B's own banner is silenced)."""
    run = logger.experiment
    settings = getattr(run, "settings", None)
    if settings is None:
        return None
    if not settings._offline:
        url = getattr(run, "url", None)
        return f"W&B run: {url}" if url else None
    sync_dir = settings.sync_dir
    return (
        f"W&B run saved offline in {sync_dir}; upload it with `make sync` "
        f"(or: wandb sync {sync_dir})"
    )


@dataclass
class TrackingOptions:
    """What runs log besides metrics.

    Args:
        images_every_n_epochs: log prediction images every N epochs (default: 4 times a run).
        num_images: fixed validation / test images logged with their masks (0: none).
        log_model: upload the best checkpoint as a W&B model artifact at the end of fit.
        group: the W&B group of the run; the dataset's name by default (a hyper-parameter
            search groups its trials under the study's name).
    """

    images_every_n_epochs: int | None = None
    num_images: int = 8
    log_model: bool = False
    group: str | None = None


def log_best_checkpoint(logger: WandbLogger, trainer: Any) -> None:
    """The best checkpoint as a W&B model artifact (aliases ``best`` and ``latest``)."""
    import wandb

    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if not best:
        return
    score = getattr(trainer.checkpoint_callback, "best_model_score", None)
    artifact = wandb.Artifact(
        name=f"model-{logger.experiment.id}",
        type="model",
        metadata={"val/iou": float(score) if score is not None else None, "file": Path(best).name},
    )
    artifact.add_file(best, name="best.ckpt")
    logger.experiment.log_artifact(artifact, aliases=["best", "latest"])
