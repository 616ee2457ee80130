"""How tests call the command line in-process, as a shell would see it."""

from __future__ import annotations

from lightning_seg.cli import main


def exit_status(argv: list[str]) -> int:
    """The exit status ``lightning-seg *argv`` would end with (argument errors included)."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
