"""Mask decoders: from the pixels of a mask file to class ids (H x W uint8), checked.

Datasets code their masks differently: 0/255 or 0/1 binary masks (PH2, ISBI, Carvana's palette
GIFs), colour-coded RGB masks (sandstone's blue/red/green/yellow), grey levels (33, 65, 201, 231),
or class ids stored as pixel values (CamVid annots, 11 = void). A decoder states one coding; a mask
that breaks it fails loudly instead of training on wrong labels.

Lossless files (PNG, BMP, TIFF, GIF) must hold exactly the expected values: a value far from all of
them is a :class:`~lightning_seg.data.io.DataError` that names the file, the unexpected values and
the expected ones. JPEG masks cannot hold exact values (block artefacts, ringing at edges), so every
pixel snaps to its nearest class and the pixels that were far from all classes are counted in a
:class:`MaskReport`; :func:`summarize_reports` turns those into one line for the run's log.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

try:  # OpenCV (installed with albumentations) has 5-10x faster 8-bit lookups and histograms.
    import cv2
except ImportError:  # pragma: no cover - NumPy does the same, slower
    cv2 = None

from lightning_seg.data.io import DEFAULT_MAX_PIXELS, DataError, load_pil
from lightning_seg.errors import ConfigurationError, unknown_choice

PathLike = str | os.PathLike[str]

LOSSY_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
_JPEG_SUFFIXES = LOSSY_SUFFIXES
_SHOWN_VALUES = 5  # unexpected values listed in an error; the rest are counted
_CHUNK = 1 << 16  # unique colours per block when measuring distances to the palette


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


@dataclass(frozen=True)
class MaskReport:
    """How well one mask file matched its coding.

    ``far`` counts pixels farther than ``tolerance`` from every class (colour or value); they are
    only possible in lossy files, where they were snapped to the nearest class anyway.
    """

    path: str
    total: int
    far: int
    tolerance: float | None = None
    reference: str = "every class colour"
    lossy: bool = False

    @property
    def far_fraction(self) -> float:
        return self.far / self.total if self.total else 0.0


def _percent(fraction: float) -> str:
    percent = 100.0 * fraction
    return f"{percent:.1f}" if percent >= 1 else f"{percent:.2g}"


def summarize_reports(reports: Iterable[MaskReport]) -> str | None:
    """One line on the far pixels of lossy masks, for the log; None when nothing was far.

    Totals are over the lossy files (all files when none is lossy), so the share says how much of
    the JPEG mask data was guessed.
    """
    reports = list(reports)
    far_reports = [report for report in reports if report.far]
    if not far_reports:
        return None
    pool = [report for report in reports if report.lossy or report.far]
    far = sum(report.far for report in far_reports)
    total = sum(report.total for report in pool)
    worst = max(far_reports, key=lambda report: report.far_fraction)
    all_jpeg = all(Path(r.path).suffix.lower() in _JPEG_SUFFIXES for r in far_reports)
    kind = "JPEG masks" if all_jpeg else "Lossy masks"
    tolerance = f" (> {worst.tolerance:g})" if worst.tolerance is not None else ""
    return (
        f"{kind}: {far:,} of {total:,} pixels ({_percent(far / total if total else 0.0)} %) in "
        f"{len(far_reports)} of {len(pool)} files were far{tolerance} from {worst.reference}; "
        f"worst: {Path(worst.path).name} ({_percent(worst.far_fraction)} %)"
    )


def _format_colour(colour: Sequence[int] | np.ndarray) -> str:
    return "(" + ", ".join(str(int(c)) for c in colour) + ")"


def _list_unexpected(labels: list[str], counts: np.ndarray) -> str:
    """``[12 (1,234 px), 200 (5 px), ... and 3 more]``, most frequent first."""
    order = np.argsort(-counts, kind="stable")
    shown = [f"{labels[i]} ({int(counts[i]):,} px)" for i in order[:_SHOWN_VALUES]]
    more = len(labels) - len(shown)
    return "[" + ", ".join(shown) + (f", ... and {more} more" if more else "") + "]"


def _lookup(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``table[values]`` for a uint8 table of at most 256 entries."""
    if cv2 is not None and values.dtype == np.uint8 and values.ndim == 2 and values.size:
        full = np.zeros(256, dtype=np.uint8)
        full[: len(table)] = table[:256]
        return cv2.LUT(np.ascontiguousarray(values), full)
    return table[values]


def _value_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def _integer(array: np.ndarray, path: PathLike) -> np.ndarray:
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


def _as_grey(array: np.ndarray, path: PathLike, how: str) -> np.ndarray:
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
    if _same_channels(rgb):
        return rgb[:, :, 0]
    red, green, blue = (rgb[:, :, i].astype(np.int64) for i in range(3))
    # ITU-R 601 luminance, as Pillow's convert("L").
    return ((red * 299 + green * 587 + blue * 114 + 500) // 1000).astype(rgb.dtype)


def _same_channels(rgb: np.ndarray) -> bool:
    return np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])


class MaskDecoder:
    """Maps the raw pixels of a mask file to class ids (uint8), checking them on the way.

    ``mode`` says what :func:`read_mask` hands to :meth:`decode`: ``"grey"`` (one channel, or RGB
    for the decoder to reduce), ``"rgb"`` (H x W x 3 colours) or ``"index"`` (raw values, a palette
    image's indices rather than its colours).
    """

    mode: ClassVar[str] = "grey"
    type_name: ClassVar[str] = ""
    num_classes: int
    ignore_index: int | None = None

    def decode(self, array: np.ndarray, path: PathLike) -> tuple[np.ndarray, MaskReport]:
        """Class ids (H x W uint8) of the raw mask ``array`` read from ``path``, and its report."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """The config that :func:`build_mask_decoder` turns back into this decoder."""
        raise NotImplementedError

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "type")
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, MaskDecoder)
            and type(other) is type(self)
            and other.spec() == self.spec()
        )

    def __hash__(self) -> int:
        return hash(repr(self))


def _check_ignore(
    kind: str, ignore_key: str, ignore: object, ignore_index: int | None, num_classes: int
) -> None:
    """An ignored colour or value needs an ignore id, which must not be a class id."""
    if (ignore is None) != (ignore_index is None):
        raise ConfigurationError(
            f"{kind} mask: {ignore_key} and ignore_index go together; got {ignore_key}={ignore!r}, "
            f"ignore_index={ignore_index!r}"
        )
    if ignore_index is not None and not num_classes <= ignore_index <= 255:
        raise ConfigurationError(
            f"{kind} mask: ignore_index {ignore_index} must be in {num_classes}..255, outside "
            f"the class ids 0..{num_classes - 1}"
        )


def _check_tolerance(kind: str, tolerance: float) -> float:
    if not tolerance >= 0:
        raise ConfigurationError(f"{kind} mask: tolerance must be >= 0, not {tolerance!r}")
    return float(tolerance)


class BinaryMask(MaskDecoder):
    """Foreground (1) where the grey value is above ``threshold``, background (0) elsewhere.

    Takes 0/255 and 0/1 masks alike (a 0/1 mask thresholded at 127 would be all background), 1-bit
    files, and RGB masks, where the largest channel counts, so a mask drawn in pure red on black is
    foreground too (its luminance, 76, would fall below the threshold). Lossless masks must hold
    only 0 and 255 or only 0 and 1; JPEG masks are thresholded, and pixels between ``tolerance``
    and ``255 - tolerance`` are counted as far.
    """

    mode = "grey"
    type_name = "binary"
    num_classes = 2

    def __init__(self, threshold: int = 127, tolerance: float = 40.0) -> None:
        if not 0 <= threshold < 255:
            raise ConfigurationError(f"binary mask: threshold must be in 0..254, not {threshold}")
        self.threshold = int(threshold)
        self.tolerance = _check_tolerance("binary", tolerance)

    def spec(self) -> dict[str, Any]:
        return {"type": self.type_name, "threshold": self.threshold, "tolerance": self.tolerance}

    def decode(self, array: np.ndarray, path: PathLike) -> tuple[np.ndarray, MaskReport]:
        grey = _integer(_as_grey(np.asarray(array), path, "max"), path)
        values, counts = _value_counts(grey)
        top = int(values[-1]) if values.size else 0
        lossy = is_lossy(path)
        report = MaskReport(str(path), grey.size, 0, self.tolerance, "both 0 and 255", lossy)
        if top <= 1:
            return (grey > 0).astype(np.uint8), report
        if not lossy:
            full = 65535 if grey.dtype == np.uint16 and top > 255 else 255
            unexpected = ~np.isin(values, (0, full))
            if unexpected.any():
                channel = " (largest RGB channel)" if np.asarray(array).ndim == 3 else ""
                listed = _list_unexpected([str(v) for v in values[unexpected]], counts[unexpected])
                raise DataError(
                    path,
                    f"unexpected mask values{channel} {listed}; expected 0 and {full}, or 0 and 1 "
                    "(binary mask; use a palette, grey or index decoder for other codings)",
                )
            return (grey > 0).astype(np.uint8), report
        if grey.dtype != np.uint8:
            grey = np.clip(grey, 0, 255).astype(np.uint8)
            values, counts = _value_counts(grey)
        far_values = (values > self.tolerance) & (values < 255 - self.tolerance)
        far = int(counts[far_values].sum())
        mask = (grey > self.threshold).astype(np.uint8)
        return mask, MaskReport(str(path), grey.size, far, self.tolerance, "both 0 and 255", True)


def _snap_values(
    values: np.ndarray, targets: np.ndarray, ids: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray]:
    """For each value, the id of the nearest target, and whether it is farther than tolerance."""
    distance = np.abs(values.astype(np.int64)[:, None] - targets.astype(np.int64)[None, :])
    nearest = distance.argmin(axis=1)
    return ids[nearest], distance[np.arange(values.size), nearest] > tolerance


def _map_values(grey: np.ndarray, values: np.ndarray, value_ids: np.ndarray) -> np.ndarray:
    """Replace every pixel by the id of its value: a lookup table when the values are small."""
    if grey.dtype in (np.uint8, np.uint16):
        table = np.zeros(int(values[-1]) + 1 if values.size else 1, dtype=np.uint8)
        table[values] = value_ids
        return _lookup(table, grey)
    return value_ids[np.searchsorted(values, grey)].astype(np.uint8)


class GreyMask(MaskDecoder):
    """Class id = index of the nearest of the grey ``values`` (sandstone: 33, 65, 201, 231).

    ``ignore_value`` (with ``ignore_index``) marks pixels to leave out of the loss. Lossless masks
    must hold values within ``tolerance`` of the listed ones; JPEG masks snap to the nearest value.
    Colour masks are reduced to grey by luminance.
    """

    mode = "grey"
    type_name = "grey"

    def __init__(
        self,
        values: Sequence[int],
        tolerance: float = 20.0,
        ignore_value: int | None = None,
        ignore_index: int | None = None,
    ) -> None:
        values = [int(value) for value in values]
        if not values:
            raise ConfigurationError("grey mask: values must list at least one grey value")
        all_values = [*values, *([] if ignore_value is None else [int(ignore_value)])]
        if len(set(all_values)) != len(all_values):
            raise ConfigurationError(f"grey mask: values must differ, got {all_values}")
        if min(all_values) < 0:
            raise ConfigurationError(f"grey mask: values must be >= 0, got {all_values}")
        _check_ignore("grey", "ignore_value", ignore_value, ignore_index, len(values))
        self.values = values
        self.tolerance = _check_tolerance("grey", tolerance)
        self.ignore_value = None if ignore_value is None else int(ignore_value)
        self.ignore_index = ignore_index
        self.num_classes = len(values)

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "type": self.type_name,
            "values": list(self.values),
            "tolerance": self.tolerance,
        }
        if self.ignore_value is not None:
            spec.update(ignore_value=self.ignore_value, ignore_index=self.ignore_index)
        return spec

    def _expected(self) -> str:
        ignore = "" if self.ignore_value is None else f" or {self.ignore_value} (ignore)"
        return f"{', '.join(map(str, self.values))}{ignore} (within {self.tolerance:g})"

    def decode(self, array: np.ndarray, path: PathLike) -> tuple[np.ndarray, MaskReport]:
        grey = _integer(_as_grey(np.asarray(array), path, "luma"), path)
        values, counts = _value_counts(grey)
        targets = np.array(self.values + ([] if self.ignore_value is None else [self.ignore_value]))
        ids = np.array(
            list(range(self.num_classes))
            + ([] if self.ignore_index is None else [self.ignore_index]),
            dtype=np.uint8,
        )
        value_ids, far_values = _snap_values(values, targets, ids, self.tolerance)
        lossy = is_lossy(path)
        if far_values.any() and not lossy:
            listed = _list_unexpected([str(v) for v in values[far_values]], counts[far_values])
            raise DataError(
                path, f"unexpected mask values {listed}; expected grey values {self._expected()}"
            )
        far = int(counts[far_values].sum())
        report = MaskReport(str(path), grey.size, far, self.tolerance, "every class value", lossy)
        return _map_values(grey, values, value_ids), report


class IndexMask(MaskDecoder):
    """Pixel values are class ids already (CamVid annots: 0-10, 11 = void).

    Palette files give their indices, not their colours. Lossless masks must hold only
    ``0..num_classes-1`` and ``ignore_index``; a JPEG index mask (rarely a good idea) snaps each
    value to the nearest valid one and counts the pixels that had to move as far.
    """

    mode = "index"
    type_name = "index"

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if not 1 <= num_classes <= 256:
            raise ConfigurationError(
                f"index mask: num_classes must be in 1..256, not {num_classes}"
            )
        if ignore_index is not None and not 0 <= ignore_index <= 255:
            raise ConfigurationError(
                f"index mask: ignore_index must be in 0..255, not {ignore_index}"
            )
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }

    def decode(self, array: np.ndarray, path: PathLike) -> tuple[np.ndarray, MaskReport]:
        array = np.asarray(array)
        if array.ndim == 3 and array.shape[2] >= 3 and not _same_channels(array[:, :, :3]):
            raise DataError(
                path,
                "mask is in colour; an index mask holds class ids in one channel (use a "
                "palette decoder for colour-coded masks)",
            )
        ids = _integer(_as_grey(array, path, "luma"), path)
        values, counts = _value_counts(ids)
        valid = np.arange(self.num_classes)
        if self.ignore_index is not None and self.ignore_index >= self.num_classes:
            valid = np.append(valid, self.ignore_index)
        unexpected = ~np.isin(values, valid)
        lossy = is_lossy(path)
        report = MaskReport(str(path), ids.size, 0, 0.0, "every class id", lossy)
        if not unexpected.any():
            return np.ascontiguousarray(ids, dtype=np.uint8).copy(), report
        if not lossy:
            last = self.num_classes - 1
            expected = f"0..{last}" if last else "0"
            if self.ignore_index is not None and self.ignore_index > last:
                expected += f" or {self.ignore_index} (ignore)"
            listed = _list_unexpected([str(v) for v in values[unexpected]], counts[unexpected])
            raise DataError(path, f"unexpected mask values {listed}; expected {expected}")
        value_ids, _ = _snap_values(values, valid, valid.astype(np.uint8), 0.0)
        far = int(counts[unexpected].sum())
        report = MaskReport(str(path), ids.size, far, 0.0, "every class id", lossy)
        return _map_values(ids, values, value_ids), report


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
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


def _unpack_rgb(packed: np.ndarray) -> np.ndarray:
    packed = packed.astype(np.uint32)
    return np.stack([packed & 255, (packed >> 8) & 255, (packed >> 16) & 255], axis=-1)


class PaletteMask(MaskDecoder):
    """Class id = index of the nearest of the RGB ``colors`` (Euclidean distance).

    ``ignore_color`` (with ``ignore_index``) marks pixels to leave out of the loss. Distinct colours
    are matched once each, not per pixel, so a 1918 x 1280 mask costs a sort and a lookup.
    Lossless masks must hold colours within ``tolerance`` of the listed ones; JPEG masks snap.
    """

    mode = "rgb"
    type_name = "palette"

    def __init__(
        self,
        colors: Sequence[Sequence[int]],
        ignore_color: Sequence[int] | None = None,
        ignore_index: int | None = None,
        tolerance: float = 40.0,
    ) -> None:
        palette = [self._colour(colour) for colour in colors]
        if not palette:
            raise ConfigurationError("palette mask: colors must list at least one RGB colour")
        ignore = None if ignore_color is None else self._colour(ignore_color)
        everything = palette + ([ignore] if ignore is not None else [])
        if len(set(everything)) != len(everything):
            raise ConfigurationError(f"palette mask: colours must differ, got {everything}")
        _check_ignore("palette", "ignore_color", ignore, ignore_index, len(palette))
        self.colors = palette
        self.ignore_color = ignore
        self.ignore_index = ignore_index
        self.tolerance = _check_tolerance("palette", tolerance)
        self.num_classes = len(palette)
        self._targets = np.array(everything, dtype=np.int64)
        ignore_ids = [] if ignore_index is None else [ignore_index]
        self._ids = np.array(list(range(len(palette))) + ignore_ids, dtype=np.uint8)

    @staticmethod
    def _colour(colour: Sequence[int]) -> tuple[int, int, int]:
        values = tuple(int(c) for c in colour)
        if len(values) != 3 or not all(0 <= c <= 255 for c in values):
            raise ConfigurationError(f"palette mask: {list(colour)!r} is not an RGB colour 0..255")
        return values  # type: ignore[return-value]

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "type": self.type_name,
            "colors": [list(c) for c in self.colors],
            "tolerance": self.tolerance,
        }
        if self.ignore_color is not None:
            spec.update(ignore_color=list(self.ignore_color), ignore_index=self.ignore_index)
        return spec

    def _nearest(self, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class id of the nearest palette colour per packed colour, and whether it is far."""
        ids = np.empty(packed.size, dtype=np.uint8)
        far = np.empty(packed.size, dtype=bool)
        limit = self.tolerance**2
        for start in range(0, packed.size, _CHUNK):
            colours = _unpack_rgb(packed[start : start + _CHUNK]).astype(np.int64)
            squared = ((colours[:, None, :] - self._targets[None, :, :]) ** 2).sum(axis=2)
            nearest = squared.argmin(axis=1)
            ids[start : start + _CHUNK] = self._ids[nearest]
            far[start : start + _CHUNK] = squared[np.arange(nearest.size), nearest] > limit
        return ids, far

    def _expected(self) -> str:
        colours = ", ".join(_format_colour(c) for c in self.colors)
        if self.ignore_color is not None:
            colours += f" or {_format_colour(self.ignore_color)} (ignore)"
        return f"{colours} (within {self.tolerance:g})"

    def decode(self, array: np.ndarray, path: PathLike) -> tuple[np.ndarray, MaskReport]:
        rgb = np.asarray(array)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        if rgb.ndim != 3 or rgb.shape[2] not in (1, 3, 4):
            raise DataError(path, f"mask has shape {rgb.shape}; expected H x W x 3 colours")
        if rgb.shape[2] == 1:
            rgb = np.repeat(rgb, 3, axis=2)
        rgb = rgb[:, :, :3]
        if rgb.dtype != np.uint8:
            if rgb.dtype.kind not in "iub" or (rgb.size and (rgb.min() < 0 or rgb.max() > 255)):
                raise DataError(path, f"mask has {rgb.dtype} values; a palette needs 8-bit RGB")
            rgb = rgb.astype(np.uint8)
        flat = _pack_rgb(rgb).ravel()
        # Distinct colours and their counts from one sort (np.unique without its slower inverse).
        ordered = np.sort(flat)
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        colours = ordered[starts]
        counts = np.diff(np.append(starts, ordered.size))
        colour_ids, far_colours = self._nearest(colours)
        lossy = is_lossy(path)
        if far_colours.any() and not lossy:
            labels = [_format_colour(c) for c in _unpack_rgb(colours[far_colours])]
            listed = _list_unexpected(labels, counts[far_colours])
            raise DataError(path, f"unexpected mask colours {listed}; expected {self._expected()}")
        if 0 < colours.size <= 16:
            # Few colours (a lossless mask): one comparison per colour beats a binary search.
            ids = np.full(flat.size, colour_ids[np.argmax(counts)], dtype=np.uint8)
            for colour, colour_id in zip(colours, colour_ids, strict=True):
                if colour_id != ids[0]:
                    ids[flat == colour] = colour_id
        else:
            ids = colour_ids[np.searchsorted(colours, flat)]
        far = int(counts[far_colours].sum())
        report = MaskReport(str(path), flat.size, far, self.tolerance, "every class colour", lossy)
        return ids.reshape(rgb.shape[:2]), report


MASK_DECODERS: dict[str, type[MaskDecoder]] = {
    "binary": BinaryMask,
    "grey": GreyMask,
    "index": IndexMask,
    "palette": PaletteMask,
}
_ALIASES = {"gray": "grey"}


def build_mask_decoder(spec: MaskDecoder | dict[str, Any] | str) -> MaskDecoder:
    """A decoder from config: ``"binary"``, ``{"type": "palette", "colors": [[0, 0, 255], ...]}``,
    ``{"type": "grey", "values": [33, 65, 201, 231]}``, ``{"type": "index", "num_classes": 11,
    "ignore_index": 11}``. Unknown types or options are a ConfigurationError listing valid ones.
    """
    if isinstance(spec, MaskDecoder):
        return spec
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigurationError(
            f"a mask decoder is a type name or a mapping with a 'type' key; got {spec!r}"
        )
    options = dict(spec)
    name = str(options.pop("type"))
    name = _ALIASES.get(name.lower(), name.lower())
    if name not in MASK_DECODERS:
        raise unknown_choice("mask decoder type", str(spec["type"]), list(MASK_DECODERS))
    cls = MASK_DECODERS[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigurationError(
            f"{name} mask decoder: unknown option(s) {', '.join(unknown)}; valid options: "
            f"{', '.join(accepted)}"
        )
    try:
        return cls(**options)
    except TypeError as error:  # a required option missing
        raise ConfigurationError(f"{name} mask decoder: {error}") from None


def _mask_array(image: Image.Image, mode: str, path: PathLike) -> np.ndarray:
    """The pixels of a decoded mask file in the form a decoder's ``mode`` asks for."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image)
        return np.repeat(values[:, :, None], 3, axis=2) if mode == "rgb" else values.copy()
    if mode == "index":
        if image.mode == "1":
            return np.asarray(image).astype(np.uint8)
        if image.mode in ("P", "L"):
            return np.array(image)  # a palette file's indices, not its colours
        if image.mode in ("PA", "LA", "La"):
            return np.array(image)[:, :, 0]
    if image.mode in ("P", "PA"):
        return _palette_pixels(image, grey=mode == "grey")
    if image.mode == "1":
        image = image.convert("L")  # 0/255, as any 8-bit binary mask
    if mode == "rgb":
        return np.array(image.convert("RGB"))
    if image.mode in ("LA", "La"):
        image = image.convert("L")
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    return np.array(image)


def _palette_pixels(image: Image.Image, grey: bool) -> np.ndarray:
    """A palette image's colours (H x W x 3), or its grey levels (H x W) if all are grey.

    Looks the indices up in the palette, channel by channel: several times faster than Pillow's
    conversion of a 1918 x 1280 GIF, and its transparency is dropped like any alpha.
    """
    indices = np.asarray(image)
    if indices.ndim == 3:  # PA: index and alpha
        indices = indices[:, :, 0]
    palette = np.zeros((256, 3), dtype=np.uint8)
    entries = np.array(image.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)[:256]
    palette[: len(entries)] = entries
    used = palette[np.bincount(indices.ravel(), minlength=256)[:256] > 0]
    if grey and np.array_equal(used[:, 0], used[:, 1]) and np.array_equal(used[:, 0], used[:, 2]):
        return _lookup(palette[:, 0], indices)
    pixels = np.empty((*indices.shape, 3), dtype=np.uint8)
    for channel in range(3):
        pixels[:, :, channel] = _lookup(palette[:, channel], indices)
    return pixels


def read_mask(
    path: PathLike,
    decoder: MaskDecoder | dict[str, Any] | str,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, MaskReport]:
    """Read the mask file at ``path`` and decode it to class ids (H x W uint8) with ``decoder``.

    The file is decoded by Pillow in the form the decoder needs (colours for a palette decoder,
    indices for an index decoder, 1-bit files as 0/255 for the others). File problems are
    :class:`~lightning_seg.data.io.DataError` lines as for images; so are masks that break the
    decoder's coding.
    """
    decoder = build_mask_decoder(decoder)
    image = load_pil(path, max_pixels)
    return decoder.decode(_mask_array(image, decoder.mode, path), path)
