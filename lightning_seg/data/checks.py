"""``lightning-seg check-data``: audit an experiment's dataset before training on it.

Every pair is decoded as training would decode it; the report gives counts per split, image
sizes, class frequencies and every problem found (each naming its file), instead of stopping at
the first one. Exit status 1 when there were problems, so scripts can gate on it.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from lightning_seg.data.base import SegmentationDataModule
from lightning_seg.data.files import FileDataModule
from lightning_seg.data.io import DataError
from lightning_seg.data.masks import MaskReport, summarize_reports
from lightning_seg.errors import ConfigurationError
from lightning_seg.parsers import check_data_parser


def datamodule_from_experiment(
    paths: Path | list[Path], overrides: list[str]
) -> SegmentationDataModule:
    """Instantiate only the ``data`` sections of an experiment's YAML files, merged in order as
    the CLI merges them (plus ``--data.*`` flags)."""
    from jsonargparse import ArgumentParser

    files = [paths] if isinstance(paths, Path) else list(paths)
    sections = [(yaml.safe_load(f.read_text()) or {}).get("data") for f in files]
    flags = [arg for data in sections if data for arg in ("--data", json.dumps(data))]
    if not flags:
        raise ConfigurationError(f"{files[-1]} has no 'data' section")
    parser = ArgumentParser(prog="lightning-seg check-data", exit_on_error=False)
    parser.add_subclass_arguments(SegmentationDataModule, "data", required=True)
    parsed = parser.parse_args([*flags, *overrides])
    return parser.instantiate_classes(parsed).data


def audit(dm: FileDataModule) -> tuple[str, int]:
    """The audit report of a datamodule of files, and the number of problems found."""
    dm.skip_invalid = True  # collect every problem instead of stopping at the first
    lines = [f"dataset {dm.name} at {dm.root}"]
    splits = dm.splits()
    problems = list(dm.skipped)
    sizes: Counter[tuple[int, int]] = Counter()
    pixels = np.zeros(256, np.int64)
    reports: list[MaskReport] = []
    for split, pairs in splits.items():
        lines.append(f"  {split}: {len(pairs)} pairs")
        for pair in pairs:
            try:
                image, mask, report = dm.decode_pair(pair)
            except DataError as error:
                problems.append(str(error))
                continue
            sizes[image.shape[1], image.shape[0]] += 1
            pixels += np.bincount(mask.ravel(), minlength=256)
            reports.append(report)
    common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(5))
    lines.append(f"image sizes (width x height): {common or 'none'}"
                 + (f" and {len(sizes) - 5} more" if len(sizes) > 5 else ""))  # fmt: skip
    total = max(int(pixels.sum()), 1)
    names = dm.class_names if dm.num_classes > 1 else ["background", *dm.class_names]
    lines.append("class frequencies (% of pixels):")
    for class_id, name in enumerate(names):
        lines.append(f"  {class_id:>3} {name:<16} {100 * pixels[class_id] / total:6.2f}")
    if dm.ignore_index is not None:
        ignored = pixels[dm.ignore_index] if 0 <= dm.ignore_index < 256 else 0
        lines.append(f"  {dm.ignore_index:>3} {'(ignored)':<16} {100 * ignored / total:6.2f}")
    if note := summarize_reports(reports):
        lines.append(note)
    lines.append(f"problems: {len(problems)}")
    lines.extend(f"  {problem}" for problem in problems)
    return "\n".join(lines), len(problems)


def check_data_command(argv: list[str]) -> int:
    from lightning_seg.experiments import composed_files, experiment_path

    args, overrides = check_data_parser().parse_known_args(argv)
    path = Path(args.experiment)
    if not path.is_file():
        path = experiment_path(args.experiment)
    dm = datamodule_from_experiment(composed_files(path), overrides)
    if not isinstance(dm, FileDataModule):
        print(f"{dm.name}: generated data, nothing to check")
        return 0
    report, count = audit(dm)
    print(report)
    return 1 if count else 0
