"""Reading a mask file: Pillow's decoding in the form each decoder needs, then the decoder."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from lightning_seg.data.io import DEFAULT_MAX_PIXELS, load_pil
from lightning_seg.data.masks.decoder import MaskDecoder
from lightning_seg.data.masks.lossy import PathLike
from lightning_seg.data.masks.pixels import lookup
from lightning_seg.data.masks.registry import build_mask_decoder
from lightning_seg.data.masks.reports import MaskReport


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
        return lookup(palette[:, 0], indices)
    pixels = np.empty((*indices.shape, 3), dtype=np.uint8)
    for channel in range(3):
        pixels[:, :, channel] = lookup(palette[:, channel], indices)
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
