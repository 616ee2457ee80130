"""The ``lightning-seg`` command: dispatch to a tool, or to LightningCLI for fit / validate /
test / predict, and turn user errors into one line.

Lightning, torch and the data stack are imported only by the command that needs them, so
``lightning-seg --help``, ``compare`` and ``sync`` answer in a fraction of a second instead of
the seconds ``import lightning`` takes.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home

from lightning_seg.commands import (
    PREDICT_FILES,
    TOOLS,
    asks_help,
    overview,
    tool,
    wants_file_prediction,
)
from lightning_seg.errors import USER_ERRORS
from lightning_seg.parsers import PARSERS


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lightning-seg`` and ``python -m lightning_seg``: the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return 0 if argv else 2
    files = wants_file_prediction(argv)
    try:
        if argv[0] in TOOLS or files:
            if asks_help(argv[1:]) and argv[0] in PARSERS:
                # The help, then exit 0, without the seconds the command's own imports take.
                PARSERS[argv[0]]().parse_args(argv[1:])
            command = tool(PREDICT_FILES if files else TOOLS[argv[0]])
            return int(command(argv[1:]) or 0)
        from lightning_seg.cli import run_cli  # Lightning: only for its own commands

        run_cli(argv)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        # jsonargparse wraps what a class raises while it instantiates it (a datamodule in
        # subclass mode); the user's mistake is the error inside, and it is one line.
        cause = user_error_inside(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 2
    return 0


def user_error_inside(error: BaseException) -> BaseException | None:
    """The configuration or data error that ``error`` was raised from or during, if any."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error.__cause__, error.__context__]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, USER_ERRORS):
            return current
        seen.add(id(current))
        todo += [current.__cause__, current.__context__]
    return None
