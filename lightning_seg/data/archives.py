"""Extract dataset archives (zip, tar, RAR) without writing anything outside the destination.

Every member of every archive is checked by hand before anything is written
(:func:`_check_members`): its name (absolute, ``..``, drive letter, backslash, NUL), the target of
each symlink and hard link, resolved through the archive's own symlinks the way the OS will
follow them (so ``a -> .`` then ``a/b -> ..`` is caught), writes through such links, and device
files and FIFOs. By hand, and alike for every format, because nothing else can be relied on:

* tarfile's extraction filter has known bypasses before Python 3.11.13, 3.12.11 and 3.13.4
  (CVE-2025-4517 and others, python/cpython#135034), and strips a leading ``/`` rather than
  refusing it;
* zipfile has no filter at all, and drops ``..`` rather than refusing it;
* the external RAR programs (:mod:`lightning_seg.data.rar`) have none either: their listings go
  through the same check, and any link in them is refused.

Behind that check, as defence in depth, tar is extracted with ``filter="data"``, each zip member
is judged by ``tarfile.data_filter`` just before it is written (so zip and tar need Python
3.11.4+), and the tree extracted into a temporary folder inside the destination is checked again
(no link leading out, no special file). Only then is it moved into place, folders merged and
every clash found before anything moves (by hand: ``shutil.move`` cannot merge), so a rejected or
broken archive leaves nothing. An archive that cannot be read, a truncated zip included, raises
:class:`DamagedArchiveError`, so a caller can fetch it again.

:class:`DownloadError` (:mod:`lightning_seg.errors`) is re-exported here and by
:mod:`lightning_seg.data.download`, where callers import it.
"""

from __future__ import annotations

import contextlib
import logging
import lzma
import os
import platform
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from lightning_seg.data.rar import (
    RAR_MAGIC,
    RarError,
    extract_rar,
    no_extractor_message,
    rar_extractors,
    rar_members,
)
from lightning_seg.errors import DownloadError

log = logging.getLogger(__name__)

_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_LINK_HOPS = 64
_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
_FilterError = getattr(tarfile, "FilterError", ())  # () catches nothing: Python before 3.11.4
_TAR_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}
_Links = dict[tuple[str, ...], str]  # where a symlink really is (its parts) -> its target


class DamagedArchiveError(DownloadError):
    """An archive that cannot be read: a broken download, worth fetching again."""


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def archive_kind(archive: Path) -> str:
    """``"zip"``, ``"tar"`` (plain, gzip, bzip2 or xz) or ``"rar"``, from the file's content."""
    archive = Path(archive)
    try:
        with open(archive, "rb") as file:
            head = file.read(64)
    except OSError as error:
        raise DownloadError(f"cannot read archive {archive}: {_reason(error)}") from None
    if head.startswith(RAR_MAGIC):
        return "rar"
    if head.startswith(b"PK") and zipfile.is_zipfile(archive):
        return "zip"
    with contextlib.suppress(OSError):
        if tarfile.is_tarfile(archive):
            return "tar"
    if zipfile.is_zipfile(archive):  # a zip after a prefix, such as a self-extracting one
        return "zip"
    if head.startswith((b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zXZ")):
        raise DamagedArchiveError(
            f"{archive} is a damaged archive (truncated or corrupt: it starts as a "
            f"{'zip' if head.startswith(b'PK') else 'compressed tar'} but cannot be read)"
        )
    hint = ""
    if head.lstrip().lower().startswith((b"<!doctype", b"<html", b"<?xml")):
        hint = "; it is a web page (a login or error page?), not the archive"
    raise DownloadError(
        f"{archive} is not a zip, tar (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) or RAR archive{hint}"
    )


def extract_archive(archive: Path, destination: Path) -> list[Path]:
    """Extract ``archive`` into ``destination``; return the paths of its entries there, sorted.

    Folders already in ``destination`` are merged with the archive's; files are replaced. Nothing
    is written unless every member is safe and the whole archive extracted.
    """
    archive, destination = Path(archive), Path(destination)
    kind = archive_kind(archive)
    if kind != "rar" and not hasattr(tarfile, "data_filter"):
        raise DownloadError(
            f"cannot extract {archive} safely: Python {platform.python_version()} lacks "
            "tarfile's extraction filter; use Python 3.11.4 or later, or extract it by hand "
            f"into {destination}"
        )
    # The folders this call creates, deepest first, to remove again if it fails.
    created = [folder for folder in (destination, *destination.parents) if not folder.exists()]
    try:
        destination.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=destination))
    except OSError as error:
        raise DownloadError(f"cannot write into {destination}: {_reason(error)}") from None
    log.info("extracting %s into %s", archive, destination)
    extracted: list[Path] | None = None
    try:
        with _extract_errors(archive):
            if kind == "zip":
                _extract_zip(archive, staging)
            elif kind == "tar":
                with tarfile.open(archive, "r:*") as tar:
                    _check_members(archive, [_tar_member(info) for info in tar.getmembers()])
                    tar.extractall(staging, filter="data")
            else:
                _extract_rar(archive, staging, destination)
            _check_tree(archive, staging, links_allowed=kind != "rar")
            extracted = _move_into(archive, staging, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if extracted is None:  # failed: leave no folder this call made
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
    return extracted


@contextlib.contextmanager
def _extract_errors(archive: Path) -> Iterator[None]:
    """Turn library errors while extracting into one-line :class:`DownloadError` messages."""
    try:
        yield
    except DownloadError:
        raise
    except RarError as error:
        raise DownloadError(str(error)) from None
    except _FilterError as error:  # before _DAMAGED: a FilterError is a TarError
        problem = f"is refused by tarfile's data filter ({error})"
        raise _unsafe(archive, error.tarinfo.name, problem) from None
    except _DAMAGED as error:
        raise DamagedArchiveError(
            f"cannot extract {archive}: {error or type(error).__name__}; the archive looks "
            "damaged: delete it and download it again"
        ) from None
    except (OSError, RuntimeError, ValueError) as error:
        raise DownloadError(f"cannot extract {archive}: {_reason(error)}") from None


def _unsafe(archive: Path, name: str, problem: str) -> DownloadError:
    return DownloadError(
        f"unsafe archive {archive}: member {name!r} {problem}; nothing was extracted"
    )


class _Member(NamedTuple):
    """One archive entry, as :func:`_check_members` sees it."""

    name: str
    kind: str  # "file", "dir", "symlink", "hardlink", "link" (RAR: any link), "special"
    target: str = ""


def path_problem(name: str) -> str | None:
    """Why a relative path from an archive could land outside the destination, or None."""
    if "\\" in name:
        return "contains a backslash (a Windows path)"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if name.startswith("/"):
        return "is an absolute path"
    if "\x00" in name:
        return "contains a NUL character"
    if ".." in name.split("/"):
        return "has a '..' component"
    return None


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _resolve(parts: list[str], symlinks: _Links) -> list[str] | None:
    """Where a path leads once the archive's own symlinks are followed; None if it leaves the root.

    Follows POSIX rules (``..`` applies to a symlink's target, not to its name), so chains such as
    ``sub/up -> ..`` then ``sub/out -> up/..`` are caught even though each looks harmless alone.
    """
    resolved: list[str] = []
    pending = list(parts)
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        resolved.append(part)
        target = symlinks.get(tuple(resolved))
        if target is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS or target.startswith("/") or _DRIVE.match(target):
                return None
            resolved.pop()
            pending = target.split("/") + pending
    return resolved


def _check_members(archive: Path, members: list[_Member]) -> None:
    """Refuse the archive, before anything is written, if a member could lead out of it.

    The one check for tar and zip members and RAR listings (why by hand: see the module
    docstring). Links are keyed by where they really are, their name resolved through the links
    before them, and checked once more as they stand at the end: a later link can redirect one.
    """
    symlinks: _Links = {}
    links: dict[tuple[str, ...], _Member] = {}
    for member in members:
        (name, kind, target), parts = member, _parts(member.name)
        if problem := path_problem(name):
            raise _unsafe(archive, name, problem)
        if kind == "special":
            raise _unsafe(archive, name, "is a device file, FIFO or socket")
        if kind == "link":
            raise _unsafe(archive, name, "is a link; links in RAR archives are not extracted")
        if not parts and kind != "dir":
            raise _unsafe(archive, name, "has an empty name (the destination itself)")
        # A symlink is created at its own path; anything else is written where its path leads.
        parent = _resolve(parts[:-1], symlinks)
        where = parent if parent is None or kind == "symlink" else _resolve(parts, symlinks)
        if where is None:
            raise _unsafe(archive, name, "would be written through a symlink leading out")
        if kind == "hardlink" and (
            path_problem(target) or _resolve(_parts(target), symlinks) is None
        ):
            raise _unsafe(archive, name, f"is a hard link to {target!r}, outside")
        if kind == "symlink":
            location = (*where, parts[-1])
            symlinks[location], links[location] = target, member
            if _leads_out(location, target, symlinks):
                raise _unsafe(archive, name, f"is a symlink to {target!r}, outside")
    for location, link in links.items():
        if _leads_out(location, link.target, symlinks):
            raise _unsafe(archive, link.name, f"is a symlink to {link.target!r}, outside")


def _leads_out(location: tuple[str, ...], target: str, symlinks: _Links) -> bool:
    """Whether a symlink at ``location`` to ``target`` leads out, once ``symlinks`` are followed."""
    if target.startswith("/") or _DRIVE.match(target) or "\\" in target or "\x00" in target:
        return True
    return _resolve([*location[:-1], *target.split("/")], symlinks) is None


def _tar_member(info: tarfile.TarInfo) -> _Member:
    if info.issym():
        return _Member(info.name, "symlink", info.linkname)
    if info.islnk():
        return _Member(info.name, "hardlink", info.linkname)
    if info.ischr() or info.isblk() or info.isfifo():
        return _Member(info.name, "special")
    return _Member(info.name, "dir" if info.isdir() else "file")


def _zip_member(zipped: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3: made on Unix
    if stat.S_ISLNK(mode):
        return _Member(
            info.filename, "symlink", zipped.read(info).decode("utf-8", "surrogateescape")
        )
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return _Member(info.filename, "special")
    return _Member(info.filename, "dir" if info.is_dir() else "file")


def _extract_zip(archive: Path, staging: Path) -> None:
    """Check every member by hand, then write each once tarfile's filter has judged it too.

    zipfile has no filter of its own, and would write a symlink as a file holding its target.
    """
    with zipfile.ZipFile(archive) as zipped:
        infos = zipped.infolist()
        members = [_zip_member(zipped, info) for info in infos]
        _check_members(archive, members)
        for info, member in zip(infos, members, strict=True):
            described = tarfile.TarInfo(member.name)
            described.type, described.linkname = _TAR_TYPES[member.kind], member.target
            tarfile.data_filter(described, str(staging))  # after earlier members: links resolve
            if member.kind == "symlink":
                path = staging.joinpath(*_parts(member.name))
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.target, path)
            else:
                zipped.extract(info, staging)


def _extract_rar(archive: Path, staging: Path, destination: Path) -> None:
    """Check each extractor's listing as tar and zip members are checked, then let it extract."""
    for tool in rar_extractors():
        _check_members(archive, [_Member(name, kind) for name, kind in rar_members(tool, archive)])
        if extract_rar(tool, archive, staging):
            return
        shutil.rmtree(staging)  # rarfile found no program: start the next one from empty
        staging.mkdir()
    raise DownloadError(no_extractor_message(archive, destination))


def _check_tree(archive: Path, staging: Path, links_allowed: bool) -> None:
    """After extraction, reject any link leading out of ``staging`` and any special file.

    Defence in depth behind :func:`_check_members`: an external RAR tool might create something
    its listing did not show.
    """
    root = os.path.realpath(staging)
    for folder, dirs, files in os.walk(staging):
        for name in dirs + files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            relative = os.path.relpath(path, staging)
            if stat.S_ISLNK(mode):
                inside = os.path.commonpath([root, os.path.realpath(path)]) == root
                if not (links_allowed and inside):
                    raise _unsafe(archive, relative, "was extracted as a link leading out")
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise _unsafe(archive, relative, "was extracted as a device file, FIFO or socket")


def _move_into(archive: Path, staging: Path, destination: Path) -> list[Path]:
    """Move the extracted tree into ``destination``, merging folders; return its paths there.

    Every clash is found before anything moves, so a clash leaves ``destination`` as it was.
    """
    created = [
        destination / Path(folder).relative_to(staging) / name
        for folder, dirs, files in os.walk(staging)
        for name in dirs + files
    ]
    moves: list[tuple[Path, Path]] = []

    def plan(source: Path, target_dir: Path) -> None:
        for entry in sorted(source.iterdir()):
            target = target_dir / entry.name
            entry_is_dir = entry.is_dir() and not entry.is_symlink()
            if entry_is_dir and target.is_dir():
                plan(entry, target)
            elif target.is_dir() and not target.is_symlink():
                raise DownloadError(
                    f"cannot extract {archive}: {target} is a folder, the archive has a file there"
                )
            elif entry_is_dir and (target.exists() or target.is_symlink()):
                raise DownloadError(
                    f"cannot extract {archive}: {target} is a file, the archive has a folder there"
                )
            else:
                moves.append((entry, target))

    plan(staging, destination)
    try:
        for entry, target in moves:
            os.replace(entry, target)
    except OSError as error:
        raise DownloadError(
            f"cannot move the extracted {archive} into {destination}: {_reason(error)}"
        ) from None
    return sorted(created)
