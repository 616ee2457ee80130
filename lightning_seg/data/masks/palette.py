"""Colour-coded masks: one RGB colour per class (sandstone's blue, red, green, yellow).

Distinct colours are packed into one integer each, matched to the palette once, and mapped back
onto the pixels, so the cost is a sort, not a distance per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_seg.data.io import DataError
from lightning_seg.data.masks.decoder import MaskDecoder, check_ignore, check_tolerance
from lightning_seg.data.masks.lossy import PathLike, is_lossy
from lightning_seg.data.masks.pixels import format_colour, list_unexpected, pack_rgb, unpack_rgb
from lightning_seg.data.masks.reports import MaskReport
from lightning_seg.errors import ConfigurationError

CHUNK = 1 << 16  # unique colours per block when measuring distances to the palette


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
        check_ignore("palette", "ignore_color", ignore, ignore_index, len(palette))
        self.colors = palette
        self.ignore_color = ignore
        self.ignore_index = ignore_index
        self.tolerance = check_tolerance("palette", tolerance)
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
        for start in range(0, packed.size, CHUNK):
            colours = unpack_rgb(packed[start : start + CHUNK]).astype(np.int64)
            squared = ((colours[:, None, :] - self._targets[None, :, :]) ** 2).sum(axis=2)
            nearest = squared.argmin(axis=1)
            ids[start : start + CHUNK] = self._ids[nearest]
            far[start : start + CHUNK] = squared[np.arange(nearest.size), nearest] > limit
        return ids, far

    def _expected(self) -> str:
        colours = ", ".join(format_colour(c) for c in self.colors)
        if self.ignore_color is not None:
            colours += f" or {format_colour(self.ignore_color)} (ignore)"
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
        flat = pack_rgb(rgb).ravel()
        # Distinct colours and their counts from one sort (np.unique without its slower inverse).
        ordered = np.sort(flat)
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        colours = ordered[starts]
        counts = np.diff(np.append(starts, ordered.size))
        colour_ids, far_colours = self._nearest(colours)
        lossy = is_lossy(path)
        if far_colours.any() and not lossy:
            labels = [format_colour(c) for c in unpack_rgb(colours[far_colours])]
            listed = list_unexpected(labels, counts[far_colours])
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
