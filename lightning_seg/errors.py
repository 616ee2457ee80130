"""Errors that the CLI turns into one clear line instead of a traceback.

They live here, apart from the code that raises them, so the command line's entry point can
catch them without importing Lightning or the data stack (``lightning-seg --help`` stays fast).
"""

from __future__ import annotations

import os


def first_line(error: BaseException, limit: int | None = None, empty: str | None = None) -> str:
    """The first line of ``error``'s message, cut to ``limit`` characters: what a one-line
    report quotes from an exception raised deep inside a library. An empty message gives
    ``empty``, by default the exception's type name."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if empty is None else empty
    return text.splitlines()[0][:limit]


class ConfigurationError(ValueError):
    """A configuration value is wrong: an unknown name, a bad combination of options."""


def unknown_choice(
    kind: str, name: str, choices: list[str] | tuple[str, ...]
) -> ConfigurationError:
    """Build the error for a name that is not in a registry, listing the valid ones."""
    valid = ", ".join(sorted(choices))
    return ConfigurationError(f"unknown {kind} {name!r}; valid choices for {kind}: {valid}")


class DataError(Exception):
    """A data file cannot be used: says which file and what is wrong with it, in one line."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str]]:
        # Keeps the two fields when a DataLoader worker sends the error to the main process.
        return type(self), (self.path, self.problem)


class DownloadError(Exception):
    """A dataset file could not be downloaded, verified or extracted; the message says why."""


#: What the command line prints as one ``error:`` line (exit status 2) rather than a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (ConfigurationError, DataError, DownloadError)
