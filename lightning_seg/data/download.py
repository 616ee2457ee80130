"""Download and verify dataset archives, and put a dataset in place with :func:`prepare_dataset`.

A datamodule's ``prepare_data`` calls :func:`prepare_dataset`: it does nothing when the data is
already there, and otherwise downloads the archive, checks it and extracts it. Dataset hosts move,
throttle and ask for logins far more often than this code breaks, so every failure is one
:class:`DownloadError` line that names the file and says how to do the step by hand.

What the functions promise, and what keeps each promise:

* a failed or interrupted download never leaves a file at its destination: it streams into a
  ``.part`` file beside it (``tempfile.mkstemp``), is checked against its sha256 or md5
  (``hashlib``) and is renamed into place (``os.replace``) only once complete and verified; a file
  already there is kept only if it matches the checksum;
* extraction writes nothing outside the destination and leaves nothing when it fails: see
  :mod:`lightning_seg.data.archives` (every member checked by hand before anything is written,
  tarfile's filter and a check of the extracted tree behind that); a damaged archive left by an
  earlier attempt is fetched once more;
* credentials in a URL (``user:password@``, ``?token=...``) never appear in a message or a log. By
  hand: urllib has no redaction, and cannot open ``user:password@`` URLs either, so they are sent
  in an ``Authorization`` header that a redirect to another host does not receive.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import logging
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO
from urllib.parse import unquote, urlsplit, urlunsplit

# Re-exported: callers and tests import the whole download-and-extract API from this module.
from lightning_seg.data.archives import (
    DamagedArchiveError,
    DownloadError,
    extract_archive,
    path_problem,
)
from lightning_seg.data.archives import archive_kind as archive_kind
from lightning_seg.data.rar import rar_extractors as rar_extractors

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
# Folder of ``root`` that holds archives while :func:`prepare_dataset` extracts them.
DOWNLOADS_DIR = ".downloads"

_DIGEST_LENGTHS = {"sha256": 64, "md5": 32}
# Query parameters whose values are secrets: tokens, keys, signatures of pre-signed URLs.
_SECRET_PARAM = re.compile(r"token|key|secret|passw|pwd|auth|sig|credential|session", re.I)


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


def _scrub(text: str, url: str) -> str:
    """``text`` with every secret part of ``url`` replaced, for errors that might quote them."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return text.replace(url, redact_url(url))
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
    for secret in sorted({s for s in found if len(s) >= 4}, key=len, reverse=True):
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
    algorithm = expected[0] if expected else "sha256"
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _stream(url, out, algorithm, timeout, progress, destination.name, manual)
        if expected is not None and digest != expected[1]:
            raise DownloadError(
                f"checksum mismatch for {shown}: expected {algorithm}:{expected[1]}, got "
                f"{algorithm}:{digest}; the download was deleted; if the file changed upstream "
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
        reason = f"HTTP {error.code} {error.reason}"
    except urllib.error.URLError as error:
        reason = _reason(error.reason, timeout)
    except (http.client.HTTPException, OSError, ValueError) as error:
        reason = _reason(error, timeout)
    else:
        if total is not None and received < total:
            raise DownloadError(
                f"{failed}: the connection closed after {received} of {total} bytes; try again, "
                f"or {manual}"
            )
        return hasher.hexdigest()
    raise DownloadError(f"{failed}: {_scrub(reason, url)}; {manual}")


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
    if path_problem(name) or "/" in name:
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
