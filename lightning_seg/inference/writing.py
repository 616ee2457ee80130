"""Writing predictions: masks and overlays as PNG, atomically, never over an input."""

from __future__ import annotations

import itertools
import os
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations' import phones home

import numpy as np
from PIL import Image

from lightning_seg.data.io import DEFAULT_MAX_PIXELS, DataError, is_image_file, read_image
from lightning_seg.errors import ConfigurationError
from lightning_seg.inference.predictor import Predictor

# Mask overlay colours (RGB) by class id; class 0 (background) is left uncoloured.
PALETTE = np.array(
    [
        (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
        (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
        (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    ],
    dtype=np.uint8,
)  # fmt: skip


def mask_image(labels: np.ndarray, binary: bool) -> np.ndarray:
    """The mask as written: 0/255 for binary (visible in any viewer), class ids otherwise."""
    if binary:
        return (labels > 0).astype(np.uint8) * 255
    return labels


def overlay_image(image: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image (H x W x 3 or grey) with every non-background class painted at ``alpha`` in a
    fixed palette colour (class 0 is left as it is)."""
    rgb = image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image[..., :1], 3, 2)
    ids = labels.astype(np.int64)
    colours = PALETTE[np.where(ids > 0, (ids - 1) % (len(PALETTE) - 1) + 1, 0)]
    blended = rgb.astype(np.float32) * (1 - alpha) + colours.astype(np.float32) * alpha
    out = np.where((ids > 0)[..., None], np.rint(blended), rgb.astype(np.float32))
    return out.astype(np.uint8)


def write_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write a PNG so that ``path`` is either absent, its old content, or the complete new file:
    encode to a temporary file in the same folder, then ``os.replace`` it (atomic on one file
    system). An interruption leaves no half-written mask, and the temporary file is removed."""
    buffer = BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    tmp = temporary_path(path)
    try:
        with tmp.open("xb") as file:
            file.write(buffer.getvalue())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temporary_path(path: Path) -> Path:
    """A fresh hidden ``.tmp`` name beside ``path``: same file system, so ``os.replace`` is atomic.

    It ends with ``path``'s own suffix (``.model.pt2.<hex>.tmp.pt2``): writers that go by the
    extension (``torch.export.save`` warns and its loader refuses anything but ``.pt2``) see the
    real one. Opened with ``"xb"`` (not ``tempfile.mkstemp``, whose files are private, mode 0600),
    so the result gets the usual permissions of new files.
    """
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp{path.suffix}")


@dataclass
class PredictReport:
    """What a prediction run did: masks written and inputs skipped, each with its error."""

    written: list[Path] = field(default_factory=list)
    skipped: list[DataError] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def collect_inputs(inputs: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """The files to predict, and the files left out of folders.

    A folder contributes its image files (by suffix, hidden files left out, not recursive); a
    file named explicitly is always tried, so a bad one is reported rather than passed over.
    """
    files: list[Path] = []
    ignored: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and is_image_file(child):
                    files.append(child)
                elif child.is_file():
                    ignored.append(child)
        else:
            files.append(path)
    return list(dict.fromkeys(files)), ignored


def output_names(files: Sequence[Path]) -> list[str]:
    """``<stem>.png`` per input; inputs that share a stem (``a.jpg``, ``a.png``, or one name in
    two folders) get ``<stem>_<suffix>`` and then a number, so no mask overwrites another."""
    names: list[str] = []
    taken: set[str] = set()
    for path in files:
        candidates = itertools.chain(
            (path.stem, f"{path.stem}_{path.suffix.lstrip('.').lower()}"),
            (f"{path.stem}_{i}" for i in itertools.count(2)),
        )
        name = next(c for c in candidates if c.lower() not in taken)
        taken.add(name.lower())
        names.append(f"{name}.png")
    return names


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(files: Sequence[Path], output: Path, names: Sequence[str], overlay: bool) -> None:
    """Refuse a run that could overwrite an input: an output folder that holds inputs, or any
    mask or overlay path that is an input file. Inputs are never written."""
    folders = {p.parent.resolve() for p in files}
    targets = [output / "overlays"] if overlay else []
    for folder in (output, *targets):
        if folder.resolve() in folders:
            raise ConfigurationError(
                f"--output {output} would put masks in {folder}, a folder that holds input "
                "images: choose another output folder (predict never writes over its inputs)"
            )
    for name in names:
        for target in (output / name, output / "overlays" / name):
            for source in files:
                if _same_file(target, source):
                    raise ConfigurationError(
                        f"{target} is an input image; choose another --output (predict never "
                        "writes over its inputs)"
                    )


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    output: Path,
    overlay: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> PredictReport:
    """Predict every file and write ``<output>/<stem>.png`` (and ``overlays/<stem>.png``).

    Unreadable files (missing, not images, truncated, corrupt, too many pixels) are skipped and
    recorded in the report; the others are still written.
    """
    from tqdm import tqdm

    names = output_names(files)
    check_outputs(files, output, names, overlay)
    output.mkdir(parents=True, exist_ok=True)
    if overlay:
        (output / "overlays").mkdir(exist_ok=True)
    report = PredictReport()
    channels = predictor.in_channels
    if channels not in (1, 3):
        raise ConfigurationError(f"predict reads 1- or 3-channel images, not {channels}")
    bar = tqdm(
        total=len(files),
        desc="predict",
        unit="image",
        file=sys.stderr,
        disable=not progress or len(files) <= 3,
        dynamic_ncols=True,
    )
    with bar:
        for path, name in zip(files, names, strict=True):
            try:
                image = read_image(path, channels, max_pixels=max_pixels)
            except DataError as error:
                report.skipped.append(error)
                bar.update()
                continue
            labels = predictor.labels(predictor.probabilities(image)).cpu().numpy()
            labels = labels.astype(np.uint8 if predictor.num_classes <= 256 else np.uint16)
            write_png_atomic(mask_image(labels, predictor.binary), output / name)
            if overlay:
                write_png_atomic(overlay_image(image, labels), output / "overlays" / name)
            report.written.append(output / name)
            bar.update()
    return report
