"""List and extract RAR archives with whichever extractor is installed.

The standard library cannot read RAR, so :mod:`lightning_seg.data.archives` hands RAR archives to
this module: the ``rarfile`` package, or ``unrar``, ``7z``/``7zz`` or ``bsdtar`` on ``PATH``. None
of these has an extraction filter like tarfile's, so this module only lists and extracts; the
caller puts every listed member through the check it uses for tar and zip members before
:func:`extract_rar` runs, and checks the extracted tree after. Each program prints its listing in
its own format, parsed here into ``(name, kind)`` pairs.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

# Limits for external RAR tools: listing is quick, extracting a large dataset is not.
TOOL_LIST_TIMEOUT = 300.0
TOOL_EXTRACT_TIMEOUT = 3600.0
RAR_TOOLS = ("unrar", "7z", "7zz", "bsdtar")
RAR_MAGIC = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")


class RarError(Exception):
    """A RAR extractor failed; the message is one complete line that names the archive."""


def rar_extractors() -> list[str]:
    """The RAR extractors found, in the order they are tried: ``rarfile``, then programs."""
    found = []
    try:
        import rarfile  # noqa: F401
    except ImportError:
        pass
    else:
        found.append("rarfile")
    return found + [tool for tool in RAR_TOOLS if shutil.which(tool)]


def no_extractor_message(archive: Path, destination: Path) -> str:
    """What to install when :func:`rar_extractors` finds nothing."""
    return (
        f"cannot extract the RAR archive {archive}: no RAR extractor found (tried the Python "
        f"package rarfile and {', '.join(RAR_TOOLS)} on PATH); install one: `apt-get install "
        "unrar` (or `libarchive-tools` for bsdtar, or `7zip`), `brew install rar` (or "
        "`sevenzip`), or `pip install rarfile` plus an unrar or unar program (`apt-get install "
        f"unar`); or extract it by hand into {destination}"
    )


def rar_members(tool: str, archive: Path) -> list[tuple[str, str]]:
    """The archive's members as ``(name, kind)``; kind: file, dir, link (any kind) or special."""
    if tool == "rarfile":
        return _rarfile_members(archive)
    source = str(archive.resolve())
    if tool == "unrar":
        return _parse_unrar(_run(tool, ["unrar", "lt", "-p-", source], archive, TOOL_LIST_TIMEOUT))
    if tool == "bsdtar":
        names = _run(tool, ["bsdtar", "-tf", source], archive, TOOL_LIST_TIMEOUT)
        verbose = _run(tool, ["bsdtar", "-tvf", source], archive, TOOL_LIST_TIMEOUT)
        return _parse_bsdtar(archive, names, verbose)
    return _parse_7z(_run(tool, [tool, "l", "-slt", source], archive, TOOL_LIST_TIMEOUT))


def extract_rar(tool: str, archive: Path, staging: Path) -> bool:
    """Extract into ``staging``; False when ``rarfile`` found no program to extract with."""
    if tool != "rarfile":
        source, into = str(archive.resolve()), staging.resolve()
        if tool == "unrar":
            command = ["unrar", "x", "-o+", "-p-", "-y", "-idq", source, f"{into}{os.sep}"]
        elif tool == "bsdtar":
            command = ["bsdtar", "--no-same-owner", "-xf", source, "-C", str(into)]
        else:
            command = [tool, "x", "-y", "-bd", f"-o{into}", source]
        _run(tool, command, archive, TOOL_EXTRACT_TIMEOUT)
        return True
    import rarfile

    try:
        with rarfile.RarFile(archive) as rar:
            rar.extractall(staging)
    except rarfile.RarCannotExec:
        return False
    except rarfile.Error as error:
        raise RarError(f"cannot extract {archive}: {error}") from None
    return True


def _rarfile_members(archive: Path) -> list[tuple[str, str]]:
    import rarfile

    members = []
    try:
        with rarfile.RarFile(archive) as rar:
            for info in rar.infolist():
                mode = getattr(info, "mode", 0) or 0
                if getattr(info, "file_redir", None) or info.is_symlink():
                    kind = "link"
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    kind = "special"
                else:
                    kind = "dir" if info.is_dir() else "file"
                members.append((info.filename, kind))
    except rarfile.Error as error:
        raise RarError(f"cannot extract {archive}: {error}") from None
    return members


def _run(tool: str, command: list[str], archive: Path, timeout: float) -> str:
    """Run an extractor without input, in a UTF-8 locale; return its output."""
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        raise RarError(f"{tool} did not finish with {archive} within {timeout:g} s") from None
    except OSError as error:
        raise RarError(f"cannot run {tool} on {archive}: {error.strerror or error}") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        detail = f": {lines[-1].strip()}" if lines else ""
        raise RarError(f"{tool} failed on {archive} (exit {done.returncode}){detail}")
    return done.stdout.decode("utf-8", "surrogateescape")


def _mode_kind(mode: str) -> str | None:
    """The kind an ``ls``-style mode string (``lrwxrwxrwx``) shows, if it is one."""
    if len(mode) != 10 or mode[1] not in "r-":
        return None
    return {"d": "dir", "-": "file", "l": "link", "h": "link"}.get(mode[0], "special")


def _parse_unrar(listing: str) -> list[tuple[str, str]]:
    members: list[tuple[str, str]] = []
    name = kind = None

    def flush() -> None:
        if name is not None:
            members.append((name, kind or "file"))

    for line in listing.splitlines():
        key, sep, value = line.lstrip().partition(": ")
        if not sep:
            continue
        if key == "Name":
            flush()
            name, kind = value, None
        elif key == "Type" and name is not None:
            kind = {"File": "file", "Directory": "dir"}.get(value.strip(), "link")
        elif key == "Attributes" and name is not None and kind != "link":
            kind = {"link": "link", "special": "special"}.get(_mode_kind(value.strip()) or "", kind)
    flush()
    return members


def _parse_7z(listing: str) -> list[tuple[str, str]]:
    _, _, entries = listing.partition("\n----------\n")
    members = []
    for block in entries.split("\n\n"):
        fields = dict(line.partition(" = ")[::2] for line in block.splitlines() if " = " in line)
        if "Path" not in fields:
            continue
        unix_mode = (fields.get("Attributes", "").split() or [""])[-1]
        kind = "dir" if fields.get("Folder") == "+" else "file"
        if fields.get("Symbolic Link") or fields.get("Hard Link") or fields.get("Link"):
            kind = "link"
        elif _mode_kind(unix_mode) in ("link", "special"):
            kind = _mode_kind(unix_mode) or kind
        members.append((fields["Path"], kind))
    return members


def _parse_bsdtar(archive: Path, names: str, verbose: str) -> list[tuple[str, str]]:
    name_lines, verbose_lines = names.splitlines(), verbose.splitlines()
    if len(name_lines) != len(verbose_lines):
        raise RarError(f"cannot list {archive} with bsdtar: its two listings disagree")
    return [
        (name, _mode_kind(line[:10]) or "file")
        for name, line in zip(name_lines, verbose_lines, strict=True)
    ]
