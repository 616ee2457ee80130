"""The U-Net paper's boundary-weighted loss (Ronneberger et al., 2015, eq. 2).

The losses are PyTorch's BCE / CE of ``pixelwise`` scaled per pixel by the U-Net weight map,
which the datamodule computes (``data.weight_map: {w0, sigma}``, see
``lightning_seg.data.weight_maps``) and which comes with the batch as ``weight``. The loss only
requires that tensor: where the map comes from is the data's business.
"""

from __future__ import annotations

from torch import Tensor

from lightning_seg.errors import ConfigurationError
from lightning_seg.losses.pixelwise import BCELoss, CrossEntropyLoss


def _require_weight(weight: Tensor | None, name: str) -> Tensor:
    if weight is None:
        raise ConfigurationError(
            f"loss {name!r} needs the U-Net weight map in the batch (key 'weight'): set "
            "data.init_args.weight_map, e.g. {w0: 10.0, sigma: 5.0}, so that the datamodule "
            "computes it"
        )
    return weight


class BoundaryBCELoss(BCELoss):
    """BCE scaled by the U-Net weight map, which must come with the batch as ``weight``."""

    modes = ("binary",)
    needs_weight_map = True

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        return super().forward(logits, target, _require_weight(weight, "boundary_bce"))


class BoundaryCELoss(CrossEntropyLoss):
    """Cross-entropy scaled by the U-Net weight map, which comes with the batch as ``weight``."""

    modes = ("multiclass",)
    needs_weight_map = True

    def forward(self, logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        return super().forward(logits, target, _require_weight(weight, "boundary_ce"))
