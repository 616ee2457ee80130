"""How well mask files matched their coding, one :class:`MaskReport` each, and the log line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lightning_seg.data.masks.lossy import JPEG_SUFFIXES


@dataclass(frozen=True)
class MaskReport:
    """How well one mask file matched its coding.

    ``far`` counts pixels farther than ``tolerance`` from every class (colour or value); they are
    only possible in lossy files, where they were snapped to the nearest class anyway.
    """

    path: str
    total: int
    far: int
    tolerance: float | None = None
    reference: str = "every class colour"
    lossy: bool = False

    @property
    def far_fraction(self) -> float:
        return self.far / self.total if self.total else 0.0


def _percent(fraction: float) -> str:
    percent = 100.0 * fraction
    return f"{percent:.1f}" if percent >= 1 else f"{percent:.2g}"


def summarize_reports(reports: Iterable[MaskReport]) -> str | None:
    """One line on the far pixels of lossy masks, for the log; None when nothing was far.

    Totals are over the lossy files (all files when none is lossy), so the share says how much of
    the JPEG mask data was guessed.
    """
    reports = list(reports)
    far_reports = [report for report in reports if report.far]
    if not far_reports:
        return None
    pool = [report for report in reports if report.lossy or report.far]
    far = sum(report.far for report in far_reports)
    total = sum(report.total for report in pool)
    worst = max(far_reports, key=lambda report: report.far_fraction)
    all_jpeg = all(Path(r.path).suffix.lower() in JPEG_SUFFIXES for r in far_reports)
    kind = "JPEG masks" if all_jpeg else "Lossy masks"
    tolerance = f" (> {worst.tolerance:g})" if worst.tolerance is not None else ""
    return (
        f"{kind}: {far:,} of {total:,} pixels ({_percent(far / total if total else 0.0)} %) in "
        f"{len(far_reports)} of {len(pool)} files were far{tolerance} from {worst.reference}; "
        f"worst: {Path(worst.path).name} ({_percent(worst.far_fraction)} %)"
    )
