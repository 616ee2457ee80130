"""Which mask files may hold values near, not at, their classes: the lossy formats.

A decoder refuses unexpected values in a lossless file but snaps and counts them in a lossy one,
so this answer decides between an error and a :class:`~lightning_seg.data.masks.MaskReport`.
"""

from __future__ import annotations

import os
from pathlib import Path

PathLike = str | os.PathLike[str]

LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
JPEG_SUFFIXES = LOSSY_SUFFIXES


def is_lossy(path: PathLike) -> bool:
    """Whether a mask file may hold values near, not at, its classes: JPEG, or lossy WebP.

    A WebP file is lossy when its image chunk is ``VP8 `` rather than the lossless ``VP8L``, so
    it is read from the file's first chunks; anything else counts as lossless.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in LOSSY_SUFFIXES:
        return True
    if suffix != ".webp":
        return False
    try:
        with path.open("rb") as file:
            head = file.read(4096)
    except OSError:
        return False
    position = 12  # after "RIFF", the size, "WEBP"; then chunks of fourcc, size, payload
    while position + 8 <= len(head):
        fourcc = head[position : position + 4]
        if fourcc in (b"VP8 ", b"VP8L"):
            return fourcc == b"VP8 "
        size = int.from_bytes(head[position + 4 : position + 8], "little")
        position += 8 + size + (size & 1)
    return False
