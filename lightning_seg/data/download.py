"""Download, verify and safely extract dataset archives.

A datamodule's ``prepare_data`` calls :func:`prepare_dataset`: it does nothing when the data is
already there, and otherwise downloads the archive, checks it and extracts it. Dataset hosts move,
throttle and ask for logins far more often than this code breaks, so every failure is one
:class:`DownloadError` line that names the file and says how to do the step by hand.

What the functions promise:

* a failed or interrupted download never leaves a file at its destination: it streams into a
  ``.part`` file beside it, and is renamed into place only once complete and verified;
* extraction checks every member before it writes anything (no absolute paths, ``..``, drive
  letters, links leading out, device files), extracts into a temporary folder inside the
  destination and moves the result into place, so a rejected or broken archive leaves nothing;
* credentials in a URL (``user:password@``, ``?token=...``) never appear in a message or a log.

Only the standard library is needed; RAR archives also need an extractor (the ``rarfile``
package, or ``unrar``, ``7z``/``7zz`` or ``bsdtar`` on ``PATH``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import logging
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
# Folder of ``root`` that holds archives while :func:`prepare_dataset` extracts them.
DOWNLOADS_DIR = ".downloads"
# Limits for external RAR tools: listing is quick, extracting a large dataset is not.
TOOL_LIST_TIMEOUT = 300.0
TOOL_EXTRACT_TIMEOUT = 3600.0
RAR_TOOLS = ("unrar", "7z", "7zz", "bsdtar")

_RAR_MAGIC = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")
_DIGEST_LENGTHS = {"sha256": 64, "md5": 32}
# Query parameters whose values are secrets: tokens, keys, signatures of pre-signed URLs.
_SECRET_PARAM = re.compile(r"token|key|secret|passw|pwd|auth|sig|credential|session", re.I)
_DRIVE = re.compile(r"^[A-Za-z]:")
_MAX_LINK_HOPS = 64


class DownloadError(Exception):
    """A dataset file could not be downloaded, verified or extracted; the message says why."""


# --- URLs and credentials ------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL as it may be shown: user info and secret-looking query values become ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//[^/]*@", "//***@", url.split("?")[0])
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(_redact_param(param) for param in parts.query.split("&"))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_param(param: str) -> str:
    name, sep, value = param.partition("=")
    return f"{name}=***" if sep and value and _SECRET_PARAM.search(name) else param


def _secrets(url: str) -> list[str]:
    """The secret parts of a URL, to scrub from any text that might quote them."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    found = [url]
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found += [userinfo, unquote(userinfo)]
        if parts.password:
            found += [parts.password, unquote(parts.password)]
    for param in parts.query.split("&"):
        name, sep, value = param.partition("=")
        if sep and value and _SECRET_PARAM.search(name):
            found += [value, unquote(value)]
    # Longest first so a secret inside another is not left half-replaced; very short ones would
    # mangle the message more than they could reveal.
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def _scrub(text: str, url: str) -> str:
    for secret in _secrets(url):
        text = text.replace(secret, redact_url(url) if secret == url else "***")
    return text


def _request(url: str) -> urllib.request.Request:
    """A request for the URL, credentials moved from the URL into a Basic auth header.

    urllib cannot open ``user:password@host`` URLs itself; the header is added as unredirected so
    a redirect to another host never receives the credentials.
    """
    parts = urlsplit(url)
    auth = None
    if "@" in parts.netloc:
        auth = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(url, headers={"User-Agent": "lightning-seg"})
    if auth is not None:
        token = base64.b64encode(auth.encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


# --- checksums -----------------------------------------------------------------------------------


def _parse_checksum(checksum: str) -> tuple[str, str]:
    """``"sha256:<hex>"``, ``"md5:<hex>"`` or bare hex (sha256) as ``(algorithm, hex digest)``."""
    algorithm, sep, digest = checksum.strip().partition(":")
    if not sep:
        algorithm, digest = "sha256", algorithm
    algorithm, digest = algorithm.lower(), digest.lower()
    length = _DIGEST_LENGTHS.get(algorithm)
    if length is None or len(digest) != length or not re.fullmatch(r"[0-9a-f]+", digest):
        raise DownloadError(
            f"checksum {checksum!r} is not 'sha256:<64 hex digits>' or 'md5:<32 hex digits>'"
        )
    return algorithm, digest


def _file_digest(path: Path, algorithm: str) -> str:
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, algorithm).hexdigest()
    except OSError as error:
        raise DownloadError(f"cannot read {path} to check its checksum: {_reason(error)}") from None


def verify_checksum(path: Path, checksum: str) -> None:
    """Raise :class:`DownloadError` with the expected and actual digests unless they match."""
    algorithm, expected = _parse_checksum(checksum)
    actual = _file_digest(Path(path), algorithm)
    if actual != expected:
        raise DownloadError(
            f"checksum mismatch for {path}: expected {algorithm}:{expected}, "
            f"got {algorithm}:{actual}"
        )


# --- downloading ---------------------------------------------------------------------------------


def download_url(
    url: str,
    destination: Path,
    checksum: str | None = None,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``destination`` and return it; an existing file is reused.

    An existing ``destination`` is kept when it matches ``checksum``, or when there is no checksum
    (it can only be a complete file: downloads are renamed into place once finished, and a file
    put there by hand is what the error messages ask for). One that does not match is downloaded
    again. ``timeout`` is in seconds, for connecting and for each read.
    """
    destination = Path(destination)
    shown = redact_url(url)
    expected = _parse_checksum(checksum) if checksum else None
    if destination.is_file():
        if expected is None:
            log.info("%s exists; not downloading it again", destination)
            return destination
        if _file_digest(destination, expected[0]) == expected[1]:
            log.info("%s exists and matches its checksum; not downloading it again", destination)
            return destination
        log.warning("%s does not match its checksum; downloading it again", destination)
    manual = f"download it by hand from {shown} and save it as {destination}"
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, part_name = tempfile.mkstemp(
            prefix=f"{destination.name}.", suffix=".part", dir=destination.parent
        )
    except OSError as error:
        raise DownloadError(f"cannot write into {destination.parent}: {_reason(error)}") from None
    part = Path(part_name)
    log.info("downloading %s to %s", shown, destination)
    try:
        with os.fdopen(handle, "wb") as out:
            algorithm = expected[0] if expected else "sha256"
            digest = _stream(url, out, algorithm, timeout, progress, destination.name, manual)
        if expected is not None and digest != expected[1]:
            raise DownloadError(
                f"checksum mismatch for {shown}: expected {expected[0]}:{expected[1]}, got "
                f"{expected[0]}:{digest}; the download was deleted; if the file changed upstream "
                f"update the checksum, otherwise {manual}"
            )
        try:
            os.chmod(part, 0o644)
            os.replace(part, destination)
        except OSError as error:
            raise DownloadError(f"cannot save {destination}: {_reason(error)}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return destination


def _stream(
    url: str,
    out: IO[bytes],
    algorithm: str,
    timeout: float,
    progress: bool,
    label: str,
    manual: str,
) -> str:
    """Copy the body of ``url`` into ``out``; return its hex digest."""
    hasher = hashlib.new(algorithm)
    received, total = 0, None
    failed = f"could not download {redact_url(url)}"
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with _progress(total, label, progress) as update:
                while chunk := response.read(CHUNK_SIZE):
                    out.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    update(len(chunk))
    except urllib.error.HTTPError as error:
        reason = _scrub(f"HTTP {error.code} {error.reason}", url)
        raise DownloadError(f"{failed}: {reason}; {manual}") from None
    except urllib.error.URLError as error:
        reason = _reason(error.reason, timeout)
        raise DownloadError(f"{failed}: {_scrub(reason, url)}; {manual}") from None
    except (http.client.HTTPException, OSError, ValueError) as error:
        reason = _reason(error, timeout)
        raise DownloadError(f"{failed}: {_scrub(reason, url)}; {manual}") from None
    if total is not None and received < total:
        raise DownloadError(
            f"{failed}: the connection closed after {received} of {total} bytes; try again, "
            f"or {manual}"
        )
    return hasher.hexdigest()


def _reason(error: BaseException | str, timeout: float | None = None) -> str:
    """A short description of why an operation failed."""
    if isinstance(error, str):
        return error
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s" if timeout is not None else "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the server up, and the address right?)"
    if isinstance(error, http.client.IncompleteRead):
        return f"the connection closed after {len(error.partial)} bytes of a part"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


@contextlib.contextmanager
def _progress(total: int | None, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Report download progress: a tqdm bar when tqdm is installed, else a line every 10 %."""
    if not enabled:
        yield lambda _: None
        return
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        with tqdm(
            total=total, desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr
        ) as bar:
            yield bar.update
        return
    done, shown_at, last = 0, 0, time.monotonic()

    def update(count: int) -> None:
        nonlocal done, shown_at, last
        done += count
        step = total / 10 if total else None
        if (step and done - shown_at >= step) or (not step and time.monotonic() - last > 5):
            of = f" of {total / 2**20:.1f}" if total else ""
            print(f"downloading {label}: {done / 2**20:.1f}{of} MiB", file=sys.stderr)
            shown_at, last = done, time.monotonic()

    yield update
    print(f"downloaded {label}: {done / 2**20:.1f} MiB", file=sys.stderr)


# --- checking archive members --------------------------------------------------------------------


class _Member(NamedTuple):
    """One archive entry, as the safety checks see it."""

    name: str
    kind: str  # "file", "dir", "symlink", "hardlink", "link" (RAR: any link), "special"
    target: str = ""


def _unsafe(archive: Path, name: str, problem: str) -> DownloadError:
    return DownloadError(
        f"unsafe archive {archive}: member {name!r} {problem}; nothing was extracted"
    )


def _path_problem(name: str) -> str | None:
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


def _resolve(parts: list[str], symlinks: dict[tuple[str, ...], str]) -> list[str] | None:
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
    """Raise :class:`DownloadError` for the first member that could write outside the destination.

    Runs over all members before anything is extracted.
    """
    for member in members:
        problem = _path_problem(member.name)
        if problem:
            raise _unsafe(archive, member.name, problem)
    symlinks = {tuple(_parts(m.name)): m.target for m in members if m.kind == "symlink"}
    for member in members:
        parts = _parts(member.name)
        if member.kind == "special":
            raise _unsafe(archive, member.name, "is a device file, FIFO or socket")
        if member.kind == "link":
            raise _unsafe(
                archive, member.name, "is a link; links in RAR archives are not extracted"
            )
        if member.kind == "symlink":
            target = member.target
            leads_out = (
                target.startswith("/")
                or _DRIVE.match(target)
                or "\\" in target
                or "\x00" in target
                or _resolve([*parts[:-1], *target.split("/")], symlinks) is None
            )
            if leads_out:
                raise _unsafe(archive, member.name, f"is a symlink to {target!r}, outside")
        if member.kind == "hardlink" and (
            _path_problem(member.target) or _resolve(_parts(member.target), symlinks) is None
        ):
            raise _unsafe(archive, member.name, f"is a hard link to {member.target!r}")
        # A symlink is created at its own path; anything else is written to where its path leads,
        # which an earlier symlink (of a folder, or of the same name) could send elsewhere.
        path = parts[:-1] if member.kind == "symlink" else parts
        if parts and _resolve(path, symlinks) is None:
            raise _unsafe(archive, member.name, "would be written through a symlink leading out")


def _check_tree(archive: Path, staging: Path, links_allowed: bool) -> None:
    """After extraction, reject any link leading out of ``staging`` and any special file.

    A second line of defence: the members were checked before, but an external tool might
    create something its listing did not show.
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


# --- extracting ----------------------------------------------------------------------------------


class DamagedArchiveError(DownloadError):
    """An archive that cannot be read: a broken download, worth fetching again."""


def archive_kind(archive: Path) -> str:
    """``"zip"``, ``"tar"`` (plain, gzip, bzip2 or xz) or ``"rar"``, from the file's content."""
    archive = Path(archive)
    try:
        with open(archive, "rb") as file:
            head = file.read(64)
    except OSError as error:
        raise DownloadError(f"cannot read archive {archive}: {_reason(error)}") from None
    if head.startswith(_RAR_MAGIC):
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
        if kind == "zip":
            _extract_zip(archive, staging)
        elif kind == "tar":
            _extract_tar(archive, staging)
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


_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


@contextlib.contextmanager
def _extract_errors(archive: Path) -> Iterator[None]:
    """Turn library errors while extracting into one-line :class:`DownloadError` messages."""
    try:
        yield
    except DownloadError:
        raise
    except _DAMAGED as error:
        raise DamagedArchiveError(
            f"cannot extract {archive}: {error or type(error).__name__}; the archive looks "
            "damaged: delete it and download it again"
        ) from None
    except (OSError, RuntimeError, ValueError) as error:
        raise DownloadError(f"cannot extract {archive}: {_reason(error)}") from None


def _zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3: made on Unix
    if stat.S_ISLNK(mode):
        target = archive.read(info).decode("utf-8", "surrogateescape")
        return _Member(info.filename, "symlink", target)
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return _Member(info.filename, "special")
    return _Member(info.filename, "dir" if info.is_dir() else "file")


def _extract_zip(archive: Path, staging: Path) -> None:
    with _extract_errors(archive), zipfile.ZipFile(archive) as zipped:
        infos = zipped.infolist()
        members = [_zip_member(zipped, info) for info in infos]
        _check_members(archive, members)
        for info, member in zip(infos, members, strict=True):
            if member.kind == "symlink":  # zipfile would write the target as a file's text
                path = staging.joinpath(*_parts(member.name))
                path.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.target, path)
            else:
                zipped.extract(info, staging)


def _tar_member(info: tarfile.TarInfo) -> _Member:
    if info.issym():
        return _Member(info.name, "symlink", info.linkname)
    if info.islnk():
        return _Member(info.name, "hardlink", info.linkname)
    if info.ischr() or info.isblk() or info.isfifo():
        return _Member(info.name, "special")
    return _Member(info.name, "dir" if info.isdir() else "file")


def _extract_tar(archive: Path, staging: Path) -> None:
    with _extract_errors(archive), tarfile.open(archive, "r:*") as tar:
        _check_members(archive, [_tar_member(info) for info in tar.getmembers()])
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: the library's own checks too
            tar.extractall(staging, filter="data")
        else:  # pragma: no cover - older Pythons
            tar.extractall(staging)


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


# --- RAR -----------------------------------------------------------------------------------------


class _NoRarTool(Exception):
    """The ``rarfile`` package is there but found no program to extract with."""


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


def _no_rar_tool(archive: Path, destination: Path) -> DownloadError:
    return DownloadError(
        f"cannot extract the RAR archive {archive}: no RAR extractor found (tried the Python "
        f"package rarfile and {', '.join(RAR_TOOLS)} on PATH); install one: `apt-get install "
        "unrar` (or `libarchive-tools` for bsdtar, or `7zip`), `brew install rar` (or "
        "`sevenzip`), or `pip install rarfile` plus an unrar or unar program (`apt-get install "
        f"unar`); or extract it by hand into {destination}"
    )


def _extract_rar(archive: Path, staging: Path, destination: Path) -> None:
    for tool in rar_extractors():
        if tool == "rarfile":
            try:
                _extract_with_rarfile(archive, staging)
            except _NoRarTool:
                shutil.rmtree(staging)  # start the next extractor from an empty folder
                staging.mkdir()
                continue
        else:
            _check_members(archive, _list_with_tool(tool, archive))
            _run_tool(tool, _extract_command(tool, archive, staging), archive, TOOL_EXTRACT_TIMEOUT)
        return
    raise _no_rar_tool(archive, destination)


def _extract_with_rarfile(archive: Path, staging: Path) -> None:
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
                members.append(_Member(info.filename, kind))
            _check_members(archive, members)
            rar.extractall(staging)
    except rarfile.RarCannotExec:
        raise _NoRarTool from None
    except rarfile.Error as error:
        raise DownloadError(f"cannot extract {archive}: {error}") from None


def _extract_command(tool: str, archive: Path, staging: Path) -> list[str]:
    source = str(archive.resolve())
    if tool == "unrar":
        return ["unrar", "x", "-o+", "-p-", "-y", "-idq", source, f"{staging.resolve()}{os.sep}"]
    if tool == "bsdtar":
        return ["bsdtar", "--no-same-owner", "-xf", source, "-C", str(staging.resolve())]
    return [tool, "x", "-y", "-bd", f"-o{staging.resolve()}", source]


def _run_tool(tool: str, command: list[str], archive: Path, timeout: float) -> str:
    """Run an extractor without input, in a UTF-8 locale; return its output."""
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        raise DownloadError(f"{tool} did not finish with {archive} within {timeout:g} s") from None
    except OSError as error:
        raise DownloadError(f"cannot run {tool} on {archive}: {_reason(error)}") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        detail = f": {lines[-1].strip()}" if lines else ""
        raise DownloadError(f"{tool} failed on {archive} (exit {done.returncode}){detail}")
    return done.stdout.decode("utf-8", "surrogateescape")


def _list_with_tool(tool: str, archive: Path) -> list[_Member]:
    """The members of a RAR archive as an external program lists them."""
    source = str(archive.resolve())
    if tool == "unrar":
        return _parse_unrar(
            _run_tool(tool, ["unrar", "lt", "-p-", source], archive, TOOL_LIST_TIMEOUT)
        )
    if tool == "bsdtar":
        names = _run_tool(tool, ["bsdtar", "-tf", source], archive, TOOL_LIST_TIMEOUT)
        verbose = _run_tool(tool, ["bsdtar", "-tvf", source], archive, TOOL_LIST_TIMEOUT)
        return _parse_bsdtar(archive, names, verbose)
    listing = _run_tool(tool, [tool, "l", "-slt", source], archive, TOOL_LIST_TIMEOUT)
    return _parse_7z(listing)


def _mode_kind(mode: str) -> str | None:
    """The kind an ``ls``-style mode string (``lrwxrwxrwx``) shows, if it is one."""
    if len(mode) != 10 or mode[1] not in "r-":
        return None
    return {"d": "dir", "-": "file", "l": "link", "h": "link"}.get(mode[0], "special")


def _parse_unrar(listing: str) -> list[_Member]:
    members: list[_Member] = []
    name = kind = None

    def flush() -> None:
        if name is not None:
            members.append(_Member(name, kind or "file"))

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


def _parse_7z(listing: str) -> list[_Member]:
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
        members.append(_Member(fields["Path"], kind))
    return members


def _parse_bsdtar(archive: Path, names: str, verbose: str) -> list[_Member]:
    name_lines, verbose_lines = names.splitlines(), verbose.splitlines()
    if len(name_lines) != len(verbose_lines):
        raise DownloadError(f"cannot list {archive} with bsdtar: its two listings disagree")
    return [
        _Member(name, _mode_kind(line[:10]) or "file")
        for name, line in zip(name_lines, verbose_lines, strict=True)
    ]


# --- the step a datamodule calls -----------------------------------------------------------------


def _archive_name(url: str) -> str:
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    return name if name not in ("", ".", "..") and "\\" not in name else "dataset-archive"


def prepare_dataset(
    root: Path,
    url: str | None,
    checksum: str | None,
    marker: str | Path,
    archive_name: str | None = None,
    timeout: float = 60,
    progress: bool = True,
) -> Path:
    """Make sure the dataset is under ``root``; return the path of its ``marker``.

    ``marker`` is a file or folder, relative to ``root``, that exists once the data is in place;
    when it does, nothing else happens (no request is made). Otherwise the archive at ``url`` is
    downloaded into ``root/.downloads/`` (named ``archive_name``, default: the URL's file name),
    verified against ``checksum``, extracted into ``root``, and deleted once the marker is there.
    On any failure the archive is kept, so a retry does not download it again.
    """
    root = Path(root)
    expected = root / marker
    if expected.exists():
        return expected
    if not url:
        raise DownloadError(
            f"dataset not found: {expected} does not exist; set `url` to the address of the "
            f"dataset's archive to download it, or download and extract it by hand into {root} "
            f"so that {expected} exists"
        )
    name = archive_name or _archive_name(url)
    if _path_problem(name) or "/" in name:
        raise DownloadError(f"archive_name {name!r} must be a plain file name")
    archive = root / DOWNLOADS_DIR / name
    reused = archive.is_file()
    download_url(url, archive, checksum, timeout=timeout, progress=progress)
    try:
        extracted = extract_archive(archive, root)
    except DamagedArchiveError as error:
        if not reused:
            raise
        # A damaged file left by an earlier attempt (no checksum told it apart): fetch it again
        # once rather than failing the same way forever.
        log.warning("%s; downloading it again", error)
        archive.unlink()
        download_url(url, archive, checksum, timeout=timeout, progress=progress)
        extracted = extract_archive(archive, root)
    if not expected.exists():
        top = sorted({path.relative_to(root).parts[0] for path in extracted})
        raise DownloadError(
            f"{archive} does not have the expected layout: {expected} is missing after "
            f"extracting it into {root}; its top-level entries: {', '.join(top) or '(none)'}"
        )
    archive.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        archive.parent.rmdir()
    log.info("dataset ready: %s", expected)
    return expected
