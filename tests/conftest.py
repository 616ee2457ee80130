"""Shared test set-up: no network, W&B offline, tiny synthetic runs."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("WANDB_SILENT", "true")
# No network in tests: Hugging Face downloads fail at once instead of retrying for half a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("LIGHTNING_SEG_RUN_ID", None)
# Under pytest-xdist (`make test` runs a worker per core) each worker computes on one thread:
# two workers of two OpenMP threads each on a 2-core machine wait on each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny tensors: on a busy 2-core machine two OpenMP
    threads waiting on each other made such tests ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _fresh_run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each CLI call in a test gets its own run id, as each real invocation does."""
    monkeypatch.delenv("LIGHTNING_SEG_RUN_ID", raising=False)


@pytest.fixture
def tiny_fit_args(tmp_path: Path) -> list[str]:
    """Arguments for a fit of a few steps on tiny synthetic data, writing under tmp_path."""
    from tests.cli_helpers import short_fit_args

    return short_fit_args(tmp_path / "runs")


def _fit_tiny_checkpoint(runs: Path, *extra: str) -> Path:
    """A real checkpoint from a fit of two steps of a tiny U-Net on 32 x 32 synthetic images."""
    from lightning_seg.entry import main
    from tests.cli_helpers import short_fit_args

    flags = short_fit_args(runs, *extra, epochs=1, train_batches=2, val_batches=1, num_train=8,
                           num_val=4, num_test=None, batch_size=None, logger=False)  # fmt: skip
    main(["fit", *flags])
    return next(runs.rglob("last.ckpt"))


@pytest.fixture(scope="session")
def fit_checkpoint() -> Callable[..., Path]:
    """``fit_checkpoint(runs_dir, *extra_cli_args)`` -> path of a tiny trained checkpoint."""
    return _fit_tiny_checkpoint
