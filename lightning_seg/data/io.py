"""Reading images from disk, with one clear error line per bad file instead of a deep traceback.

Real datasets ship stray files (``notes.txt``, ``.DS_Store``, macOS ``._IMD002.bmp`` copies),
files cut short by an interrupted download, and the odd gigantic scan. Every such problem is raised
as a :class:`DataError` that names the file and says what is wrong with it, so a run fails at the
first bad file with a message that says which one to fix.
"""

from __future__ import annotations

import os
import struct
import sys
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from lightning_seg.choices import DEFAULT_MAX_PIXELS
from lightning_seg.errors import ConfigurationError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")

# Pillow plugins we let identify a file. A short list means a stray file is reported as "not an
# image" instead of being taken for one of Pillow's lenient exotic formats, and no file can make
# Pillow start an external program (its EPS plugin runs Ghostscript). "JPEG" also opens MPO, the
# multi-picture JPEG some cameras write.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "GIF", "WEBP", "PPM", "JPEG2000")

# Magic numbers, only to tell "corrupt PNG header" from "not an image at all" in error messages.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

# What Pillow raises while decoding damaged data: truncated streams (OSError), broken chunks
# (SyntaxError, struct.error, zlib.error), impossible sizes (ValueError), early end (EOFError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_EXIF_ERRORS = (*_DECODE_ERRORS, KeyError, TypeError)

# EXIF orientations 5-8 rotate by 90 degrees, so they swap height and width.
_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}
_HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names an image by its suffix, leaving out hidden files.

    Hidden files include macOS's ``.DS_Store`` and its ``._IMD002.bmp`` resource-fork copies, which
    carry an image suffix but hold no image. Looks at the name only, so listing a folder stays
    cheap; :func:`read_image` finds the rest.
    """
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def _sniff(path: Path) -> str:
    """A hint for an unidentified file: which image format its first bytes claim, or text."""
    try:
        with path.open("rb") as file:
            head = file.read(512)
    except OSError:
        return ""
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return "text" if all(c.isprintable() or c.isspace() for c in text) else ""


_BOMBS = (Image.DecompressionBombError, Image.DecompressionBombWarning)
_DECODING_FAILURES = (*_BOMBS, *_DECODE_ERRORS)


def _decode_error(path: Path, error: BaseException) -> DataError:
    """The one-line error for a failure while Pillow opens or decodes ``path``."""
    if isinstance(error, _BOMBS):
        return DataError(path, f"too many pixels, refused as a decompression bomb ({error})")
    return DataError(path, f"truncated or corrupt image ({error})")


@contextmanager
def _open(path: Path, max_pixels: int | None) -> Iterator[Image.Image]:
    """Open ``path`` with Pillow, turning every way it can fail into a :class:`DataError`.

    With ``max_pixels`` set, that limit decides and Pillow's decompression-bomb warning is not
    needed; with None, Pillow's process-wide ``PIL.Image.MAX_IMAGE_PIXELS`` still applies and its
    warning becomes an error too, so a huge file never decodes silently.
    """
    try:
        file = path.open("rb")
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, not an image file") from None
    except OSError as error:
        raise DataError(path, f"cannot read file ({error.strerror or error})") from None
    with file, warnings.catch_warnings():
        action = "error" if max_pixels is None else "ignore"
        warnings.simplefilter(action, Image.DecompressionBombWarning)
        if os.fstat(file.fileno()).st_size == 0:
            raise DataError(path, "empty file (0 bytes)")
        try:
            image = Image.open(file, formats=IMAGE_FORMATS)
        except Image.UnidentifiedImageError:
            claimed = _sniff(path)
            if claimed == "text":
                problem = "not an image file (it contains text)"
            elif claimed:
                problem = f"corrupt image: starts like a {claimed} file but its header is broken"
            else:
                problem = "not an image file, or an image format that is not supported"
            raise DataError(path, problem) from None
        except _DECODING_FAILURES as error:
            raise _decode_error(path, error) from None
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise DataError(
                path,
                f"too many pixels: {width} x {height} = {width * height:,} > max_pixels "
                f"{max_pixels:,} (decompression-bomb guard; raise max_pixels if the image is "
                "genuine)",
            )
        # Not ``with image``: Image.close() would free the pixels; closing the file is enough.
        yield image


def _load(image: Image.Image, path: Path) -> Image.Image:
    """Decode all pixel data now, so a truncated file fails here and not as a garbled sample.

    Pillow only detects truncation while it decodes, and only while
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is False (its default), which this module never changes.
    """
    try:
        image.load()
    except _DECODING_FAILURES as error:
        raise _decode_error(path, error) from None
    if image.format in ("JPEG", "MPO"):
        # Phones store photos sideways plus an EXIF flag; viewers (and annotators) show them
        # upright, so masks drawn on them are upright too. Unreadable EXIF: pixels as stored.
        with suppress(*_EXIF_ERRORS):
            ImageOps.exif_transpose(image, in_place=True)
    return image


def _orientation_swaps(image: Image.Image) -> bool:
    """Whether the EXIF orientation of a JPEG turns it by 90 degrees (height and width swap)."""
    if image.format not in ("JPEG", "MPO"):
        return False
    try:
        return image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSING_ORIENTATIONS
    except _EXIF_ERRORS:
        return False


def _high_depth_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale a 16-bit (or 32-bit int / float) grey image to 0..255 by the range it really uses.

    Scientific cameras store 10-, 12- or 14-bit data in 16-bit files: dividing by 257 would leave a
    12-bit image almost black. The range is 2**bits - 1 for the fewest bits (8 at least) that hold
    the image's maximum, so files from one sensor keep one common scale (a file that stays below
    half the sensor range is the exception: it is scaled as one bit less). Floats with a maximum of
    at most 1 are taken as 0..1.
    """
    values = array.astype(np.float64, copy=False)
    top = float(np.nanmax(values)) if values.size else 0.0
    if array.dtype.kind == "f" and top <= 1.0:
        scale = 255.0
    else:
        bits = max(8, int(np.ceil(np.log2(top + 1.0)))) if top > 0 else 8
        scale = 255.0 / (2.0**bits - 1.0)
    scaled = np.nan_to_num(values * scale, nan=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_array(image: Image.Image, channels: int) -> np.ndarray:
    """Pixels as H x W x ``channels`` uint8: grey and palette expanded, alpha dropped."""
    if image.mode in _HIGH_DEPTH_MODES:
        grey = _high_depth_to_uint8(np.asarray(image))
        array = grey[:, :, None] if channels == 1 else np.repeat(grey[:, :, None], 3, axis=2)
        return np.ascontiguousarray(array)
    if image.mode in ("P", "PA"):
        # Via RGBA: palette transparency then needs no warning and is dropped like any alpha.
        image = image.convert("RGBA")
    array = np.array(image.convert("L" if channels == 1 else "RGB"))
    if channels == 1:
        array = array[:, :, None]
    return np.ascontiguousarray(array)


def read_image(
    path: str | os.PathLike[str], channels: int = 3, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode a whole image to an H x W x ``channels`` uint8 array (C-contiguous, writable).

    ``channels`` 1 gives grey (colour by ITU-R 601 luminance), 3 gives RGB (grey replicated).
    Palette images are expanded, alpha is dropped, 16-bit grey is scaled to 8 bits by the range it
    really uses (see :func:`_high_depth_to_uint8`; Pillow itself keeps only the high byte of 16-bit
    RGB), JPEG photos are turned upright by their EXIF orientation, and multi-frame files (GIF,
    TIFF) give their first frame. Every failure is a :class:`DataError` naming the file: missing,
    empty, not an image, truncated or corrupt, or more than ``max_pixels`` pixels.
    """
    if channels not in (1, 3):
        raise ConfigurationError(f"channels must be 1 (grey) or 3 (RGB), not {channels!r}")
    path = Path(path)
    with _open(path, max_pixels) as image:
        return _to_array(_load(image, path), channels)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) of an image from its header alone, as :func:`read_image` would return it.

    Cheap (no pixel data is decoded), so it cannot notice truncation; it follows the EXIF rotation
    of JPEG photos, and fails with the same :class:`DataError` lines as :func:`read_image`, except
    that it leaves the pixel limit to :func:`read_image` (reading a header is safe at any size) but
    for Pillow's own hard limit, twice ``PIL.Image.MAX_IMAGE_PIXELS``.
    """
    path = Path(path)
    with _open(path, max_pixels=sys.maxsize) as image:
        width, height = image.size
        return (width, height) if _orientation_swaps(image) else (height, width)


def load_pil(
    path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """The fully decoded Pillow image of ``path`` (EXIF-upright), for readers that need its mode.

    Mask decoders use it: a palette PNG's indices, a 1-bit file's bits or a 16-bit file's values
    are lost once converted to 8-bit RGB. Errors as :func:`read_image`.
    """
    path = Path(path)
    with _open(path, max_pixels) as image:
        return _load(image, path)
