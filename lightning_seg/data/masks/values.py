"""Value-coded masks: one grey level, or the pixel value itself, per class.

:class:`BinaryMask` (0/255 or 0/1), :class:`GreyMask` (listed grey levels) and :class:`IndexMask`
(class ids as pixel values) differ only in how a value becomes an id; a lossless file with a value
they do not expect is refused, a JPEG one is snapped and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lightning_seg.data.io import DataError
from lightning_seg.data.masks.decoder import MaskDecoder, check_ignore, check_tolerance
from lightning_seg.data.masks.lossy import PathLike, is_lossy
from lightning_seg.data.masks.pixels import (
    as_grey,
    as_integer,
    list_unexpected,
    map_values,
    same_channels,
    snap_values,
    value_counts,
)
from lightning_seg.data.masks.reports import MaskReport
from lightning_seg.errors import ConfigurationError


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
        self.tolerance = check_tolerance("binary", tolerance)

    def spec(self) -> dict[str, Any]:
        return {"type": self.type_name, "threshold": self.threshold, "tolerance": self.tolerance}

    def decode(self, array: np.ndarray, path: PathLike) -> tuple[np.ndarray, MaskReport]:
        grey = as_integer(as_grey(np.asarray(array), path, "max"), path)
        values, counts = value_counts(grey)
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
                listed = list_unexpected([str(v) for v in values[unexpected]], counts[unexpected])
                raise DataError(
                    path,
                    f"unexpected mask values{channel} {listed}; expected 0 and {full}, or 0 and 1 "
                    "(binary mask; use a palette, grey or index decoder for other codings)",
                )
            return (grey > 0).astype(np.uint8), report
        if grey.dtype != np.uint8:
            grey = np.clip(grey, 0, 255).astype(np.uint8)
            values, counts = value_counts(grey)
        far_values = (values > self.tolerance) & (values < 255 - self.tolerance)
        far = int(counts[far_values].sum())
        mask = (grey > self.threshold).astype(np.uint8)
        return mask, MaskReport(str(path), grey.size, far, self.tolerance, "both 0 and 255", True)


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
        check_ignore("grey", "ignore_value", ignore_value, ignore_index, len(values))
        self.values = values
        self.tolerance = check_tolerance("grey", tolerance)
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
        grey = as_integer(as_grey(np.asarray(array), path, "luma"), path)
        values, counts = value_counts(grey)
        targets = np.array(self.values + ([] if self.ignore_value is None else [self.ignore_value]))
        ids = np.array(
            list(range(self.num_classes))
            + ([] if self.ignore_index is None else [self.ignore_index]),
            dtype=np.uint8,
        )
        value_ids, far_values = snap_values(values, targets, ids, self.tolerance)
        lossy = is_lossy(path)
        if far_values.any() and not lossy:
            listed = list_unexpected([str(v) for v in values[far_values]], counts[far_values])
            raise DataError(
                path, f"unexpected mask values {listed}; expected grey values {self._expected()}"
            )
        far = int(counts[far_values].sum())
        report = MaskReport(str(path), grey.size, far, self.tolerance, "every class value", lossy)
        return map_values(grey, values, value_ids), report


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
        if array.ndim == 3 and array.shape[2] >= 3 and not same_channels(array[:, :, :3]):
            raise DataError(
                path,
                "mask is in colour; an index mask holds class ids in one channel (use a "
                "palette decoder for colour-coded masks)",
            )
        ids = as_integer(as_grey(array, path, "luma"), path)
        values, counts = value_counts(ids)
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
            listed = list_unexpected([str(v) for v in values[unexpected]], counts[unexpected])
            raise DataError(path, f"unexpected mask values {listed}; expected {expected}")
        value_ids, _ = snap_values(values, valid, valid.astype(np.uint8), 0.0)
        far = int(counts[unexpected].sum())
        report = MaskReport(str(path), ids.size, far, 0.0, "every class id", lossy)
        return map_values(ids, values, value_ids), report
