"""Per-image records of an evaluation and the paired comparison of two tested checkpoints.

``test`` writes ``evaluations/test-<checkpoint>.json`` into the checkpoint's run folder (the
``validate`` command ``validate-<checkpoint>.json``): the scores, and under ``images`` one
record per scored image (its name, IoU, and per scored class the intersection and union in
pixels). The records say which images a model fails on, and they let two models tested on the
same images be compared image by image: a paired bootstrap of the difference of their dataset
IoUs, far tighter than two overlapping intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import torch

from lightning_seg.errors import ConfigurationError
from lightning_seg.intervals import dataset_iou, paired_difference
from lightning_seg.metrics import ImageCounts


def image_records(counts: ImageCounts, names: list[str]) -> list[dict[str, Any]]:
    """One record per scored image: ``name`` (from the split's sample names by dataset index,
    ``#k`` for the k-th image when indices are unknown), ``iou``, ``intersection``, ``union``."""
    scores = counts.image_iou()
    records = []
    for row, index in enumerate(counts.indices.tolist()):
        name = names[index] if 0 <= index < len(names) else f"#{row}"
        records.append({
            "name": name,
            "iou": round(float(scores[row]), 6),
            "intersection": [int(v) for v in counts.intersections[row].tolist()],
            "union": [int(v) for v in counts.unions[row].tolist()],
        })  # fmt: skip
    return records


def overlapping_images(scored: list[str], seen: list[str]) -> list[str]:
    """The scored images that are also among ``seen`` (a checkpoint's training images, or the
    validation images that chose its epoch and threshold); tiles compared by their image file."""
    files = {name.split("#")[0] for name in seen}
    return [name for name in scored if name.split("#")[0] in files]


def worst_images(records: list[dict[str, Any]], count: int = 3) -> str:
    """``IMD155.bmp 0.663, IMD404.bmp 0.702``: the lowest-scoring images, by file name."""
    worst = sorted(records, key=lambda r: r["iou"])[:count]
    return ", ".join(f"{PurePosixPath(r['name']).name} {r['iou']:.3f}" for r in worst)


def counts_of(records: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(intersections, unions) images x classes of per-image records."""
    inter = torch.tensor([r["intersection"] for r in records], dtype=torch.float64)
    union = torch.tensor([r["union"] for r in records], dtype=torch.float64)
    return inter.reshape(len(records), -1), union.reshape(len(records), -1)


@dataclass(frozen=True)
class PairedComparison:
    """IoU(a) - IoU(b) on the images both were tested on, with its bootstrap interval."""

    iou_a: float
    iou_b: float
    difference: float
    low: float
    high: float
    images: int

    def line(self, name_a: str, name_b: str) -> str:
        verdict = (
            f"{name_a} is better" if self.low > 0
            else f"{name_b} is better" if self.high < 0
            else "no difference shown"
        )  # fmt: skip
        return (
            f"{name_a} - {name_b}: test IoU {self.iou_a:.4f} - {self.iou_b:.4f} = "
            f"{self.difference:+.4f} (95 % CI {self.low:+.4f} to {self.high:+.4f}, paired "
            f"bootstrap over {self.images} shared images): {verdict}"
        )


def compare_paired(a: dict[str, Any], b: dict[str, Any]) -> PairedComparison:
    """Compare two test evaluations (``evaluations/test-*.json``) on the images both hold."""
    for result in (a, b):
        if not result.get("images"):
            raise ConfigurationError(
                f"{result.get('checkpoint', 'an evaluation')}: no per-image records; test the "
                "checkpoint again with this version (`lightning-seg test --ckpt_path ...`)"
            )
    by_name = {r["name"]: r for r in b["images"]}
    shared = [r["name"] for r in a["images"] if r["name"] in by_name]
    if len(shared) < 2:
        raise ConfigurationError(
            f"the two evaluations share {len(shared)} test image(s): they were tested on "
            "different data, so a paired comparison means nothing"
        )
    first = {r["name"]: r for r in a["images"]}
    counts_a = counts_of([first[n] for n in shared])
    counts_b = counts_of([by_name[n] for n in shared])
    if counts_a[0].shape[1] != counts_b[0].shape[1]:
        raise ConfigurationError("the two evaluations score different numbers of classes")
    difference, low, high = paired_difference(counts_a, counts_b)
    return PairedComparison(
        float(dataset_iou(*counts_a)), float(dataset_iou(*counts_b)), difference, low, high,
        len(shared),
    )  # fmt: skip
