"""Datamodules, one per dataset, over :class:`SegmentationDataModule`."""

from lightning_seg.data.base import SegmentationDataModule
from lightning_seg.data.camvid import CamVidDataModule
from lightning_seg.data.carvana import CarvanaDataModule
from lightning_seg.data.files import FileDataModule
from lightning_seg.data.folder import FolderDataModule
from lightning_seg.data.ph2 import PH2DataModule
from lightning_seg.data.sandstone import SandstoneDataModule
from lightning_seg.data.synthetic import SyntheticDataModule

__all__ = [
    "CamVidDataModule",
    "CarvanaDataModule",
    "FileDataModule",
    "FolderDataModule",
    "PH2DataModule",
    "SandstoneDataModule",
    "SegmentationDataModule",
    "SyntheticDataModule",
]
