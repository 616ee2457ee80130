"""Fixtures for dataset tests: an empty cache per test, the shared real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    env = os.environ.get("LIGHTNING_SEG_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test decodes into its own cache folder, never the user's."""
    monkeypatch.setenv("LIGHTNING_SEG_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def real_data() -> Path:
    root = shared_data()
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root} (set LIGHTNING_SEG_DATA)")
    return root
