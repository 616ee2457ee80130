"""Where lightning_seg keeps files it makes itself (decoded datasets, converted weights).

A leaf module, so that data and models can both use it without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$LIGHTNING_SEG_CACHE``, else ``~/.cache/lightning_seg``."""
    env = os.environ.get("LIGHTNING_SEG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lightning_seg"
