"""What every mask decoder is: a coding that maps pixels to class ids, compared by its config.

A decoder's ``repr`` is its class name and options; cache fingerprints hold it, so two decoders
with the same options are equal, hash alike and share a cache.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from lightning_seg.data.masks.lossy import PathLike
from lightning_seg.data.masks.reports import MaskReport
from lightning_seg.errors import ConfigurationError


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


def check_ignore(
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


def check_tolerance(kind: str, tolerance: float) -> float:
    if not tolerance >= 0:
        raise ConfigurationError(f"{kind} mask: tolerance must be >= 0, not {tolerance!r}")
    return float(tolerance)
