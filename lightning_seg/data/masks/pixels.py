"""Array work shared by the decoders: reading values and colours out of a mask, fast.

The decoders' checks and mappings run once per distinct value or colour, not per pixel; these
helpers count those values, map them back onto the pixels and word the unexpected ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

try:  # OpenCV (installed with albumentations) has 5-10x faster 8-bit lookups and histograms.
    import cv2
except ImportError:  # pragma: no cover - NumPy does the same, slower
    cv2 = None

from lightning_seg.data.io import DataError
from lightning_seg.data.masks.lossy import PathLike

SHOWN_VALUES = 5  # unexpected values listed in an error; the rest are counted


def format_colour(colour: Sequence[int] | np.ndarray) -> str:
    return "(" + ", ".join(str(int(c)) for c in colour) + ")"


def list_unexpected(labels: list[str], counts: np.ndarray) -> str:
    """``[12 (1,234 px), 200 (5 px), ... and 3 more]``, most frequent first."""
    order = np.argsort(-counts, kind="stable")
    shown = [f"{labels[i]} ({int(counts[i]):,} px)" for i in order[:SHOWN_VALUES]]
    more = len(labels) - len(shown)
    return "[" + ", ".join(shown) + (f", ... and {more} more" if more else "") + "]"


def lookup(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``table[values]`` for a uint8 table of at most 256 entries."""
    if cv2 is not None and values.dtype == np.uint8 and values.ndim == 2 and values.size:
        full = np.zeros(256, dtype=np.uint8)
        full[: len(table)] = table[:256]
        return cv2.LUT(np.ascontiguousarray(values), full)
    return table[values]


def value_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a non-negative integer array and how often each occurs (sorted)."""
    flat = values.ravel()
    if cv2 is not None and flat.dtype == np.uint8 and 0 < flat.size < 1 << 24:
        # float32 counts are exact below 2**24 pixels
        histogram = cv2.calcHist([np.ascontiguousarray(flat)], [0], None, [256], [0, 256])
        counts = histogram.ravel().astype(np.int64)
        present = np.flatnonzero(counts)
        return present, counts[present]
    if flat.dtype in (np.uint8, np.uint16, np.bool_):
        counts = np.bincount(flat, minlength=1)
        present = np.flatnonzero(counts)
        return present, counts[present]
    return np.unique(flat, return_counts=True)


def as_integer(array: np.ndarray, path: PathLike) -> np.ndarray:
    """The mask as non-negative integers (uint8 or uint16 where they fit, for fast lookups)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        raise DataError(path, f"mask has {array.dtype} pixels; expected integer class values")
    if array.dtype in (np.uint8, np.uint16) or array.size == 0:
        return array
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise DataError(path, f"mask has negative values (down to {low})")
    return array.astype(np.uint8 if high < 256 else np.uint16 if high < 65536 else np.int64)


def as_grey(array: np.ndarray, path: PathLike, how: str) -> np.ndarray:
    """One channel: colour reduced by luminance (``how="luma"``) or by its largest channel."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise DataError(path, f"mask has shape {array.shape}; expected H x W or H x W x 3")
    if array.shape[2] == 2:  # grey + alpha
        return array[:, :, 0]
    rgb = array[:, :, :3]
    if how == "max":  # np.maximum, not rgb.max(axis=2): reducing a length-3 axis is slow
        return np.maximum(np.maximum(rgb[:, :, 0], rgb[:, :, 1]), rgb[:, :, 2])
    if same_channels(rgb):
        return rgb[:, :, 0]
    red, green, blue = (rgb[:, :, i].astype(np.int64) for i in range(3))
    # ITU-R 601 luminance, as Pillow's convert("L").
    return ((red * 299 + green * 587 + blue * 114 + 500) // 1000).astype(rgb.dtype)


def same_channels(rgb: np.ndarray) -> bool:
    return np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])


def snap_values(
    values: np.ndarray, targets: np.ndarray, ids: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """For each value, the id of the nearest target, and whether it is farther than tolerance."""
    distance = np.abs(values.astype(np.int64)[:, None] - targets.astype(np.int64)[None, :])
    nearest = distance.argmin(axis=1)
    return ids[nearest], distance[np.arange(values.size), nearest] > tolerance


def map_values(grey: np.ndarray, values: np.ndarray, value_ids: np.ndarray) -> np.ndarray:
    """Replace every pixel by the id of its value: a lookup table when the values are small."""
    if grey.dtype in (np.uint8, np.uint16):
        table = np.zeros(int(values[-1]) + 1 if values.size else 1, dtype=np.uint8)
        table[values] = value_ids
        return lookup(table, grey)
    return value_ids[np.searchsorted(values, grey)].astype(np.uint8)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 colours as one uint32 key each, so they sort and compare at once.

    The key is the bytes R, G, B, 255 read little-endian (0xFFBBGGRR): adding the alpha byte and
    viewing the result costs one pass, where shifting and or-ing channels costs several.
    """
    rgb = np.ascontiguousarray(rgb)
    if cv2 is not None and rgb.size:
        rgba = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    else:
        rgba = np.full((*rgb.shape[:2], 4), 255, dtype=np.uint8)
        rgba[:, :, :3] = rgb
    return rgba.view("<u4")[:, :, 0]


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    packed = packed.astype(np.uint32)
    return np.stack([packed & 255, (packed >> 8) & 255, (packed >> 16) & 255], axis=-1)
