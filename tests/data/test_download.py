"""Downloading, verifying and extracting dataset archives, against a real local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import socket
import stat
import struct
import sys
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lightning_seg.data.download import (
    DownloadError,
    download_url,
    extract_archive,
    prepare_dataset,
    rar_extractors,
    redact_url,
    verify_checksum,
)

PAYLOAD = b"lesion pixels " * 5000
MARKER = "PH2Dataset/PH2_dataset.txt"


@dataclass
class Server:
    """A local HTTP server serving ``folder``; ``paths`` records every request it answered."""

    url: str
    folder: Path
    paths: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class Handler(SimpleHTTPRequestHandler):
    """Serves files, plus ``/truncated`` (promises more bytes than it sends) and ``/stall``."""

    def __init__(self, *args: object, server_state: Server, **kwargs: object) -> None:
        self.state = server_state
        super().__init__(*args, directory=str(server_state.folder), **kwargs)  # type: ignore[arg-type]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.state.paths.append(self.path)
        if self.path.startswith("/truncated"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD) * 2))
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.wfile.flush()
            self.close_connection = True
        elif self.path.startswith("/stall"):
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            self.state.release.wait(10)
        elif self.path.startswith("/private/"):
            if self.headers.get("Authorization") != "Basic dXNlcjpzM2NyZXQtcHc=":  # user:s3cret-pw
                self.send_error(401)
            else:
                self.path = self.path.removeprefix("/private")
                super().do_GET()
        else:
            super().do_GET()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    folder = tmp_path / "served"
    folder.mkdir()
    state = Server(url="", folder=folder)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, server_state=state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- download_url --------------------------------------------------------------------------------


def test_download_with_matching_checksum(server: Server, tmp_path: Path):
    (server.folder / "data.bin").write_bytes(PAYLOAD)
    target = tmp_path / "out" / "data.bin"
    assert download_url(f"{server.url}/data.bin", target, sha256(PAYLOAD)) == target
    assert target.read_bytes() == PAYLOAD
    assert list(target.parent.iterdir()) == [target]  # no .part left behind


def test_md5_and_bare_hex_checksums(server: Server, tmp_path: Path):
    (server.folder / "data.bin").write_bytes(PAYLOAD)
    md5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
    download_url(f"{server.url}/data.bin", tmp_path / "a.bin", md5, progress=False)
    bare = hashlib.sha256(PAYLOAD).hexdigest().upper()
    download_url(f"{server.url}/data.bin", tmp_path / "b.bin", bare, progress=False)
    verify_checksum(tmp_path / "b.bin", md5)


def test_checksum_mismatch_leaves_no_file(server: Server, tmp_path: Path):
    (server.folder / "data.bin").write_bytes(PAYLOAD)
    target = tmp_path / "out" / "data.bin"
    with pytest.raises(
        DownloadError, match=r"checksum mismatch.*expected sha256:0{64}, got sha256"
    ):
        download_url(f"{server.url}/data.bin", target, "sha256:" + "0" * 64, progress=False)
    assert list(target.parent.iterdir()) == []


def test_verify_checksum_reports_expected_and_actual(tmp_path: Path):
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    verify_checksum(path, sha256(b"abc"))
    with pytest.raises(DownloadError, match=r"expected md5:0{32}, got md5:900150983cd24fb0"):
        verify_checksum(path, "md5:" + "0" * 32)
    with pytest.raises(DownloadError, match="is not 'sha256:<64 hex digits>'"):
        verify_checksum(path, "crc32:abcd")


def test_404_is_a_clear_error(server: Server, tmp_path: Path):
    target = tmp_path / "missing.zip"
    with pytest.raises(DownloadError) as error:
        download_url(f"{server.url}/missing.zip", target, progress=False)
    message = str(error.value)
    assert "HTTP 404" in message and f"{server.url}/missing.zip" in message
    assert f"save it as {target}" in message and "\n" not in message
    assert not target.exists()


def test_connection_refused_fails_fast(tmp_path: Path):
    target = tmp_path / "data.zip"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"connection refused.*download it by hand"):
        download_url(f"http://127.0.0.1:{closed_port()}/data.zip", target, progress=False)
    assert time.monotonic() - start < 5
    assert list(tmp_path.iterdir()) == []


def test_timeout_is_reported_and_leaves_no_file(server: Server, tmp_path: Path):
    target = tmp_path / "out" / "slow.bin"
    with pytest.raises(DownloadError, match=r"no answer within 0\.5 s"):
        download_url(f"{server.url}/stall", target, timeout=0.5, progress=False)
    assert list(target.parent.iterdir()) == []


def test_interrupted_download_leaves_no_file(server: Server, tmp_path: Path):
    target = tmp_path / "out" / "data.bin"
    with pytest.raises(DownloadError, match=f"closed after {len(PAYLOAD)} of {2 * len(PAYLOAD)}"):
        download_url(f"{server.url}/truncated", target, progress=False)
    assert list(target.parent.iterdir()) == []


def test_present_file_is_not_downloaded_again(server: Server, tmp_path: Path):
    (server.folder / "data.bin").write_bytes(PAYLOAD)
    target = tmp_path / "data.bin"
    for _ in range(2):
        download_url(f"{server.url}/data.bin", target, sha256(PAYLOAD), progress=True)
    download_url(f"{server.url}/data.bin", target, progress=False)  # no checksum: kept as well
    assert server.paths == ["/data.bin"]
    target.write_bytes(b"damaged")  # a file that does not match is fetched again
    download_url(f"{server.url}/data.bin", target, sha256(PAYLOAD), progress=False)
    assert target.read_bytes() == PAYLOAD and len(server.paths) == 2


def test_progress_lines_without_tqdm(server: Server, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    (server.folder / "data.bin").write_bytes(PAYLOAD)
    download_url(f"{server.url}/data.bin", tmp_path / "data.bin", progress=True)
    assert "downloaded data.bin: 0.1 MiB" in capsys.readouterr().err


def test_credentials_are_sent_but_never_shown(server: Server, tmp_path: Path):
    (server.folder / "data.bin").write_bytes(PAYLOAD)
    host = server.url.removeprefix("http://")
    good = f"http://user:s3cret-pw@{host}/private/data.bin"
    download_url(good, tmp_path / "data.bin", sha256(PAYLOAD), progress=False)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD

    for url, secret in [
        (f"http://user:wrong-pw@{host}/private/data.bin", "wrong-pw"),
        (f"http://user:s3cret-pw@{host}/nothing.bin", "s3cret-pw"),
        (f"{server.url}/nothing.bin?token=abc123xyz&x=1", "abc123xyz"),
        (f"http://user:s3cret-pw@127.0.0.1:{closed_port()}/x.bin?api_key=k3y-val", "k3y-val"),
    ]:
        with pytest.raises(DownloadError) as error:
            download_url(url, tmp_path / "other.bin", progress=False)
        message = str(error.value)
        assert secret not in message and "s3cret" not in message, message
        assert "***" in message
    assert (
        redact_url("https://u:p@host/a.zip?token=t0k&x=1") == "https://***@host/a.zip?token=***&x=1"
    )


# --- extract_archive -----------------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def make_tar(path: Path, infos: list[tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for info, data in infos:
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def tar_info(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_extract_zip_with_nested_folders(tmp_path: Path):
    archive = make_zip(tmp_path / "a.zip", {"top/mid/deep.txt": b"deep", "top/side.txt": b"side"})
    out = tmp_path / "out"
    created = extract_archive(archive, out)
    assert (out / "top/mid/deep.txt").read_bytes() == b"deep"
    assert created == [out / p for p in ["top", "top/mid", "top/mid/deep.txt", "top/side.txt"]]
    assert tree(out) == ["top", "top/mid", "top/mid/deep.txt", "top/side.txt"]


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".bin", "w:xz"), ("", "w")])
def test_extract_tar_by_content(tmp_path: Path, suffix: str, mode: str):
    infos = [
        (tar_info("data/images/a.png"), b"png"),
        (tar_info("data/masks/a.png"), b"mask"),
        (tar_info("data/latest", tarfile.SYMTYPE, "images"), b""),
    ]
    archive = make_tar(tmp_path / f"archive{suffix}", infos, mode)
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "kept.txt").write_text("mine")  # folders already there are merged
    extract_archive(archive, out)
    assert (out / "data/latest/a.png").read_bytes() == b"png"
    assert (out / "data/kept.txt").read_text() == "mine"
    assert [p.name for p in out.iterdir()] == ["data"]  # no temporary folder left


@pytest.mark.parametrize(
    "name,problem",
    [
        ("../evil.txt", "'..' component"),
        ("/tmp/x-lightning-seg-test", "absolute path"),
        ("ok/../../evil.txt", "'..' component"),
        ("C:/evil.txt", "drive letter"),
        ("..\\evil.txt", "backslash"),
    ],
)
def test_unsafe_zip_is_rejected_before_writing(tmp_path: Path, name: str, problem: str):
    archive = make_zip(tmp_path / "bad.zip", {"aaa/first.txt": b"x", name: b"evil"})
    out = tmp_path / "out" / "inner"
    with pytest.raises(
        DownloadError, match=re.escape(f"member {name!r}") + f".*{problem}.*nothing was extracted"
    ):
        extract_archive(archive, out)
    assert not out.exists()
    assert tree(tmp_path) == ["bad.zip"]


def test_zip_symlink_out_is_rejected(tmp_path: Path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        info = zipfile.ZipInfo("passwd")
        info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(info, "/etc/passwd")
    with pytest.raises(DownloadError, match="'passwd' is a symlink to '/etc/passwd'"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "infos,member",
    [
        ([tar_info("passwd", tarfile.SYMTYPE, "/etc/passwd")], "passwd"),
        ([tar_info("../evil.txt")], "../evil.txt"),
        ([tar_info("up", tarfile.SYMTYPE, "../..")], "up"),
        ([tar_info("hard", tarfile.LNKTYPE, "../outside")], "hard"),
        ([tar_info("fifo", tarfile.FIFOTYPE)], "fifo"),
        ([tar_info("null", tarfile.CHRTYPE)], "null"),
        # Each link alone stays inside; together, sub/out leads to the parent of the destination.
        (
            [
                tar_info("sub/up", tarfile.SYMTYPE, ".."),
                tar_info("sub/out", tarfile.SYMTYPE, "up/.."),
            ],
            "sub/out",
        ),
        # A file written through a symlink that leads out.
        ([tar_info("dir", tarfile.SYMTYPE, "/tmp"), tar_info("dir/evil.txt")], "dir"),
    ],
)
def test_unsafe_tar_is_rejected_before_writing(
    tmp_path: Path, infos: list[tarfile.TarInfo], member: str
):
    archive = make_tar(
        tmp_path / "bad.tar.gz", [(tar_info("first.txt"), b"ok")] + [(i, b"evil") for i in infos]
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DownloadError, match="unsafe archive .*" + re.escape(f"member {member!r}")):
        extract_archive(archive, out)
    assert tree(tmp_path) == ["bad.tar.gz", "out"]


def zip_with_links(path: Path, members: list[tuple[str, str | None, bytes]]) -> Path:
    """A zip made on Unix; ``(name, symlink target or None, data)`` per member."""
    with zipfile.ZipFile(path, "w") as zipped:
        for name, target, data in members:
            info = zipfile.ZipInfo(name)
            mode = stat.S_IFLNK | 0o777 if target is not None else stat.S_IFREG | 0o644
            info.create_system, info.external_attr = 3, mode << 16
            zipped.writestr(info, data if target is None else target.encode())
    return path


@pytest.fixture
def no_writes(monkeypatch) -> None:
    """Fail the test if extraction writes anything: the members must be refused before that."""

    def wrote(*args: object, **kwargs: object) -> None:
        pytest.fail("an unsafe archive was written before all its members were checked")

    monkeypatch.setattr(tarfile.TarFile, "extractall", wrote)
    monkeypatch.setattr(zipfile.ZipFile, "extract", wrote)
    monkeypatch.setattr(os, "symlink", wrote)


@pytest.mark.parametrize(
    "name,infos,member",
    [
        # `a` is the destination itself, so `a/b -> ..` is its parent.
        ("dot.tar", [("a", "."), ("a/b", "..")], "a/b"),
        ("dots.tar", [("a", "."), ("a/a/a/b", "../..")], "a/a/a/b"),
        # `up` is a folder's parent (the destination); `sub/out` goes one further.
        ("up.tar", [("sub/up", ".."), ("sub/out", "up/.."), ("sub/out/x.txt", None)], "sub/out"),
        # `s/x` is inside until the later `s/y -> .` redirects it; then a file written through it.
        ("later.tar", [("s/x", "y/../.."), ("s/y", "."), ("s/x/evil.txt", None)], "s/x/evil.txt"),
        ("redirected.tar", [("s/x", "y/../.."), ("s/y", ".")], "s/x"),  # as the links end up
        ("dot.zip", [("a", "."), ("a/b", ".."), ("a/b/evil.txt", None)], "a/b"),
        ("later.zip", [("s/x", "y/../.."), ("s/y", "."), ("s/x/evil.txt", None)], "s/x/evil.txt"),
    ],
)
def test_link_chains_are_refused_before_anything_is_written(
    tmp_path: Path, no_writes: None, name: str, infos: list[tuple[str, str | None]], member: str
):
    """Each link looks harmless alone; followed in order, they lead out of the destination.

    Checked by hand before extraction: tarfile's filter alone is bypassable before Python
    3.11.13/3.12.11/3.13.4, and it only sees a member once the ones before it are written.
    """
    if name.endswith(".zip"):
        archive = zip_with_links(tmp_path / name, [(n, t, b"evil") for n, t in infos])
    else:
        tar_infos = [
            tar_info(n, tarfile.REGTYPE if t is None else tarfile.SYMTYPE, t or "")
            for n, t in infos
        ]
        archive = make_tar(tmp_path / name, [(i, b"evil") for i in tar_infos], "w")
    out = tmp_path / "out"
    with pytest.raises(DownloadError) as error:
        extract_archive(archive, out)
    message = str(error.value)
    assert message.startswith(f"unsafe archive {archive}: member {member!r} ")
    assert message.endswith("; nothing was extracted") and "\n" not in message
    assert tree(tmp_path) == [name]


@pytest.mark.skipif("PC_PATH_MAX" not in os.pathconf_names, reason="needs POSIX PATH_MAX")
def test_realpath_overflow_bypass_of_the_tar_filter_is_refused(tmp_path: Path):
    """CVE-2025-4517: links whose expansion overflows PATH_MAX, which ``os.path.realpath`` then
    stops resolving, so tarfile's filter (before 3.11.13/3.12.11/3.13.4) lets ``escape/new``
    be written outside. Built after CPython's ``test_realpath_limit_attack``.
    """
    out = tmp_path / "out"
    out.mkdir()
    steps = "abcdefghijklmnop"
    staging = len(str(out)) + len("/.extracting-12345678/")  # where extract_archive unpacks
    component = "d" * ((os.pathconf(tmp_path, "PC_PATH_MAX") - staging) // (len(steps) + 1))
    infos, path = [], ""
    for step in steps:
        infos += [tar_info(f"{path}{component}", tarfile.DIRTYPE)]
        infos += [tar_info(f"{path}{step}", tarfile.SYMTYPE, component)]
        path += f"{component}/"
    linkpath = "/".join([*steps, "l" * 254])  # expands past PATH_MAX: realpath stops here
    infos += [
        tar_info(linkpath, tarfile.SYMTYPE, "/".join([".."] * len(steps))),  # the staging folder
        tar_info("escape", tarfile.SYMTYPE, f"{linkpath}/../.."),  # its parent's parent
        tar_info("escape/new.txt"),
    ]
    archive = make_tar(tmp_path / "overflow.tar", [(info, b"new") for info in infos], "w")
    with pytest.raises(DownloadError) as error:
        extract_archive(archive, out)
    assert tree(tmp_path) == ["out", "overflow.tar"]  # filter alone, 3.11.7: "new.txt" here
    message = str(error.value)
    assert message.startswith(f"unsafe archive {archive}: member 'escape' is a symlink to ")
    assert message.endswith("; nothing was extracted") and "\n" not in message


def test_not_an_archive(tmp_path: Path):
    page = tmp_path / "data.zip"
    page.write_text("<!DOCTYPE html><html>Please log in</html>")
    with pytest.raises(DownloadError, match=r"is not a zip, tar .* a web page"):
        extract_archive(page, tmp_path / "out")


def test_damaged_archive(tmp_path: Path):
    archive = make_tar(tmp_path / "a.tar.gz", [(tar_info("a.txt"), os.urandom(50_000))])
    archive.write_bytes(archive.read_bytes()[:-2000])
    with pytest.raises(DownloadError, match=r"cannot extract .*damaged"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- RAR -----------------------------------------------------------------------------------------

RAR5_MAGIC = b"Rar!\x1a\x07\x01\x00"


def test_rar_without_an_extractor_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rarfile", None)  # hide the Python package, if installed
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # and every program
    archive = make_rar5(tmp_path / "PH2Dataset.rar", [("PH2Dataset/PH2_dataset.txt", b"x")])
    out = tmp_path / "data"
    with pytest.raises(DownloadError) as error:
        extract_archive(archive, out)
    message = str(error.value)
    for hint in [
        "apt-get install unrar",
        "libarchive-tools",
        "brew install rar",
        "pip install rarfile",
    ]:
        assert hint in message
    assert str(archive) in message and f"by hand into {out}" in message
    assert not out.exists()


def fake_bsdtar(folder: Path, names: list[str], modes: list[str]) -> Path:
    """A stand-in for ``bsdtar`` (absent here): lists the given members, extracts them empty.

    It checks the listing parser and that a listing is checked before anything is extracted;
    a real extractor is exercised by ``test_rar_real_extraction`` where one is installed.
    """
    folder.mkdir()
    listing = "\n".join(names)
    verbose = "\n".join(
        f"{mode}  0 user group 0 Jan  1  2024 {name}"
        for name, mode in zip(names, modes, strict=True)
    )
    creates = "\n".join(
        f'mkdir -p "$dir/{name}"'
        if mode.startswith("d")
        else f'mkdir -p "$(dirname "$dir/{name}")"; echo x > "$dir/{name}"'
        for name, mode in zip(names, modes, strict=True)
    )
    script = folder / "bsdtar"
    script.write_text(
        f"""#!/bin/sh
case "$1" in
  -tf) printf '%s\\n' '{listing}' ;;
  -tvf) printf '%s\\n' '{verbose}' ;;
  --no-same-owner) dir="$5"; touch "{folder}/extract-called"; {creates} ;;
  *) exit 2 ;;
esac
"""
    )
    script.chmod(0o755)
    return folder


@pytest.mark.parametrize(
    "names,modes,problem",
    [
        (["PH2Dataset/", "PH2Dataset/a.bmp"], ["drwxr-xr-x", "-rw-r--r--"], None),
        (["ok.txt", "../evil.txt"], ["-rw-r--r--", "-rw-r--r--"], "'..' component"),
        (["ok.txt", "link"], ["-rw-r--r--", "lrwxrwxrwx"], "is a link"),
        (["ok.txt", "dev"], ["-rw-r--r--", "crw-rw-rw-"], "device file"),
    ],
)
def test_rar_listing_is_checked_before_extracting(tmp_path, monkeypatch, names, modes, problem):
    monkeypatch.setitem(sys.modules, "rarfile", None)
    tools = fake_bsdtar(tmp_path / "bin", names, modes)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}/usr/bin{os.pathsep}/bin")
    assert rar_extractors() == ["bsdtar"]
    archive = make_rar5(tmp_path / "a.rar", [("a.txt", b"x")])  # what the fake lists counts
    out = tmp_path / "out"
    if problem is None:
        assert extract_archive(archive, out) == [out / "PH2Dataset", out / "PH2Dataset/a.bmp"]
        return
    with pytest.raises(DownloadError, match=problem):
        extract_archive(archive, out)
    assert not (tools / "extract-called").exists() and not out.exists()


def make_rar5(path: Path, members: list[tuple[str, bytes | None]]) -> Path:
    """Write a RAR 5 archive of stored (uncompressed) members; ``None`` data makes a folder.

    No program here can create RAR archives, so this writes the format's few header kinds
    directly (checked against libarchive's reader).
    """

    def vint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    def header(body: bytes, data: bytes = b"") -> bytes:
        size = vint(len(body))
        return struct.pack("<I", zlib.crc32(size + body)) + size + body + data

    blob = RAR5_MAGIC + header(vint(1) + vint(0) + vint(0))  # main header
    for name, data in members:
        flags, mode = (0x5, 0o40755) if data is None else (0x4, 0o100644)  # folder, CRC present
        data = data or b""
        encoded = name.encode()
        # File header: type, flags (data follows), data size, file flags, size, mode, data CRC,
        # stored (no compression), made on Unix, the name.
        fields = [vint(2), vint(0x2), vint(len(data)), vint(flags), vint(len(data)), vint(mode)]
        fields += [struct.pack("<I", zlib.crc32(data)), vint(0), vint(1), vint(len(encoded))]
        body = b"".join(fields) + encoded
        blob += header(body, data)
    path.write_bytes(blob + header(vint(5) + vint(0) + vint(0)))  # end of archive
    return path


@pytest.mark.skipif(not rar_extractors(), reason="no RAR extractor installed")
def test_rar_real_extraction(tmp_path: Path):
    members = [("PH2Dataset", None), ("PH2Dataset/PH2_dataset.txt", b"marker")]
    archive = make_rar5(tmp_path / "PH2Dataset.rar", members)
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / MARKER).read_bytes() == b"marker"
    bad = make_rar5(tmp_path / "bad.rar", [*members, ("../evil.txt", b"evil")])
    with pytest.raises(DownloadError, match=r"'\.\.' component"):
        extract_archive(bad, tmp_path / "bad")
    assert not (tmp_path / "bad").exists() and not (tmp_path / "evil.txt").exists()


# --- prepare_dataset -----------------------------------------------------------------------------


def test_prepare_dataset_end_to_end(server: Server, tmp_path: Path):
    archive = make_zip(
        server.folder / "PH2Dataset.zip",
        {MARKER: b"index", "PH2Dataset/PH2 Dataset images/IMD002/IMD002.bmp": b"bmp"},
    )
    root = tmp_path / "data" / "ph2"
    url = f"{server.url}/PH2Dataset.zip"
    checksum = sha256(archive.read_bytes())
    assert prepare_dataset(root, url, checksum, MARKER) == root / MARKER
    assert (root / "PH2Dataset/PH2 Dataset images/IMD002/IMD002.bmp").read_bytes() == b"bmp"
    assert tree(root) == sorted(
        [
            "PH2Dataset",
            MARKER,
            "PH2Dataset/PH2 Dataset images",
            "PH2Dataset/PH2 Dataset images/IMD002",
            "PH2Dataset/PH2 Dataset images/IMD002/IMD002.bmp",
        ]
    )  # the archive was removed once extracted
    assert prepare_dataset(root, url, checksum, MARKER) == root / MARKER
    assert server.paths == ["/PH2Dataset.zip"]


def test_prepare_dataset_without_url_names_the_marker(tmp_path: Path):
    root = tmp_path / "ph2"
    with pytest.raises(DownloadError) as error:
        prepare_dataset(root, None, None, MARKER)
    message = str(error.value)
    assert str(root / MARKER) in message and "set `url`" in message and "by hand" in message


def test_prepare_dataset_with_the_wrong_layout(server: Server, tmp_path: Path):
    make_zip(server.folder / "other.zip", {"Images/a.bmp": b"x", "README.txt": b"r"})
    root = tmp_path / "ph2"
    with pytest.raises(DownloadError, match=r"top-level entries: Images, README.txt"):
        prepare_dataset(root, f"{server.url}/other.zip", None, MARKER, progress=False)
    assert (root / ".downloads" / "other.zip").is_file()  # kept: a retry does not download again
    with pytest.raises(DownloadError):
        prepare_dataset(root, f"{server.url}/other.zip", None, MARKER, progress=False)
    assert server.paths == ["/other.zip"]
