"""Datamodules, one per dataset, over :class:`SegmentationDataModule`."""

from lightning_seg.data.base import SegmentationDataModule
from lightning_seg.data.synthetic import SyntheticDataModule

__all__ = ["SegmentationDataModule", "SyntheticDataModule"]
