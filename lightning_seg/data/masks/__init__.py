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

The modules, one idea each: :mod:`.decoder` (the decoder interface), :mod:`.values` (binary,
grey and index codings), :mod:`.palette` (colour coding), :mod:`.registry` (decoders from config),
:mod:`.reading` (mask files through Pillow), :mod:`.lossy` (which files may hold inexact values),
:mod:`.reports` (what a lossy file cost) and :mod:`.pixels` (the array work they share).
"""

from lightning_seg.data.masks.decoder import MaskDecoder
from lightning_seg.data.masks.lossy import LOSSY_SUFFIXES, PathLike, is_lossy
from lightning_seg.data.masks.palette import PaletteMask
from lightning_seg.data.masks.reading import read_mask
from lightning_seg.data.masks.registry import MASK_DECODERS, build_mask_decoder
from lightning_seg.data.masks.reports import MaskReport, summarize_reports
from lightning_seg.data.masks.values import BinaryMask, GreyMask, IndexMask

__all__ = [
    "LOSSY_SUFFIXES",
    "MASK_DECODERS",
    "BinaryMask",
    "GreyMask",
    "IndexMask",
    "MaskDecoder",
    "MaskReport",
    "PaletteMask",
    "PathLike",
    "build_mask_decoder",
    "is_lossy",
    "read_mask",
    "summarize_reports",
]
