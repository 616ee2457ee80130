"""Mask decoders: each coding read exactly, JPEG masks snapped and reported, bad values refused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_seg.data.io import DataError
from lightning_seg.data.masks import (
    BinaryMask,
    GreyMask,
    IndexMask,
    MaskReport,
    PaletteMask,
    build_mask_decoder,
    is_lossy,
    read_mask,
    summarize_reports,
)
from lightning_seg.errors import ConfigurationError

SANDSTONE_COLOURS = [(0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 255, 0)]
SANDSTONE_GREYS = [33, 65, 201, 231]


def shared_data() -> Path:
    """The real data folder: $LIGHTNING_SEG_DATA, else ../shared/data beside the checkout."""
    root = os.environ.get("LIGHTNING_SEG_DATA")
    path = Path(root) if root else Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path.resolve()} (set LIGHTNING_SEG_DATA)")
    return path


def blobs(height: int = 240, width: int = 320, classes: int = 4) -> np.ndarray:
    """Class ids laid out as large rectangles and discs, like a real label map."""
    yy, xx = np.mgrid[:height, :width]
    ids = np.zeros((height, width), np.uint8)
    ids[: height // 2, width // 2 :] = 1 % classes
    ids[(yy - height * 0.65) ** 2 + (xx - width * 0.3) ** 2 < (height / 4) ** 2] = 2 % classes
    ids[height * 3 // 4 :, width * 3 // 4 :] = 3 % classes
    return ids


def colours(ids: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    return np.array(palette, np.uint8)[ids]


def save(path: Path, array: np.ndarray, mode: str | None = None, **params) -> Path:
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path, **params)
    return path


def assert_error(error: pytest.ExceptionInfo[DataError], path: Path, *parts: str) -> None:
    message = str(error.value)
    assert message.startswith(f"{path}: "), message
    for part in parts:
        assert part in message, message


# -- binary -------------------------------------------------------------------------------------


@pytest.fixture
def lesion() -> np.ndarray:
    return blobs(60, 80, classes=2)


@pytest.mark.parametrize(
    ("name", "pixels", "mode"),
    [
        ("one_bit.bmp", lambda ids: ids * 255, "1"),
        ("rgb_0_255.bmp", lambda ids: np.repeat(ids[..., None] * 255, 3, axis=2), None),
        ("zero_one.png", lambda ids: ids, None),
        ("zero_255.png", lambda ids: ids * 255, None),
        ("red_on_black.png", lambda ids: colours(ids, [(0, 0, 0), (255, 0, 0)]), None),
    ],
)
def test_binary_codings(tmp_path: Path, lesion: np.ndarray, name: str, pixels, mode) -> None:
    path = save(tmp_path / name, pixels(lesion).astype(np.uint8), mode)
    if mode:
        assert Image.open(path).mode == mode
    mask, report = read_mask(path, "binary")
    assert mask.dtype == np.uint8 and mask.flags.c_contiguous
    np.testing.assert_array_equal(mask, lesion)
    assert report == MaskReport(str(path), lesion.size, 0, 40.0, "both 0 and 255", False)


def test_binary_carvana_palette_gif(tmp_path: Path, lesion: np.ndarray) -> None:
    folder = tmp_path / "train_masks"
    folder.mkdir()
    gif = Image.fromarray(lesion, "P")
    gif.putpalette([0, 0, 0, 255, 255, 255])
    gif.save(folder / "00087a6bd4dc_01_mask.gif")
    mask, _ = read_mask(folder / "00087a6bd4dc_01_mask.gif", BinaryMask())
    np.testing.assert_array_equal(mask, lesion)
    # Read as indices, the same file gives the same classes.
    mask, _ = read_mask(folder / "00087a6bd4dc_01_mask.gif", {"type": "index", "num_classes": 2})
    np.testing.assert_array_equal(mask, lesion)


def test_binary_refuses_other_values_in_lossless_files(tmp_path: Path, lesion: np.ndarray) -> None:
    grey = lesion * 255
    grey[:3, :4] = 128
    path = save(tmp_path / "IMD002_lesion.png", grey.astype(np.uint8))
    with pytest.raises(DataError) as error:
        read_mask(path, "binary")
    assert_error(error, path, "unexpected mask values [128 (12 px)]", "expected 0 and 255")


def test_binary_jpeg_is_thresholded_and_reported(tmp_path: Path, lesion: np.ndarray) -> None:
    grey = lesion * 255
    inner_edge = (lesion == 1) & (np.roll(lesion, 1, axis=1) == 0)
    grey[inner_edge] = 170  # an anti-aliased edge, as masks resized before saving have
    path = save(tmp_path / "plane_mask.jpg", grey.astype(np.uint8), quality=75)
    mask, report = read_mask(path, "binary")
    assert (mask == lesion).mean() > 0.99
    assert report.lossy and report.total == lesion.size and 0 < report.far < lesion.size * 0.05


# -- palette ------------------------------------------------------------------------------------


def test_palette_exact_on_png(tmp_path: Path) -> None:
    ids = blobs()
    path = save(tmp_path / "Sandstone_Versa0000.png", colours(ids, SANDSTONE_COLOURS))
    mask, report = read_mask(path, PaletteMask(SANDSTONE_COLOURS))
    np.testing.assert_array_equal(mask, ids)
    assert report.far == 0 and not report.lossy


def test_palette_many_colours_and_ignore_colour() -> None:
    palette = [(i * 9, 255 - i * 9, (i * 37) % 256) for i in range(25)]
    ids = np.arange(30 * 30).reshape(30, 30) % 26
    pixels = np.array([*palette, (255, 255, 255)], np.uint8)[ids]
    decoder = PaletteMask(palette, ignore_color=(255, 255, 255), ignore_index=255, tolerance=3)
    mask, _ = decoder.decode(pixels, "many.png")
    np.testing.assert_array_equal(mask, np.where(ids == 25, 255, ids))


def jpeg_mask_with_stray_colour(tmp_path: Path, suffix: str) -> tuple[Path, np.ndarray]:
    ids = blobs()
    pixels = colours(ids, SANDSTONE_COLOURS)
    pixels[10:20, 10:20] = (12, 200, 7)  # 57 from green: no class colour
    return save(tmp_path / f"airplane_017_mask{suffix}", pixels, quality=75), ids


def test_palette_jpeg_snaps_and_reports(tmp_path: Path) -> None:
    path, ids = jpeg_mask_with_stray_colour(tmp_path, ".jpg")
    mask, report = read_mask(path, {"type": "palette", "colors": SANDSTONE_COLOURS})
    assert (mask == ids).mean() >= 0.99
    assert report.lossy and report.far > 0 and report.tolerance == 40.0
    assert report.total == ids.size


def test_palette_png_with_the_same_stray_colour_fails(tmp_path: Path) -> None:
    path, _ = jpeg_mask_with_stray_colour(tmp_path, ".png")
    with pytest.raises(DataError) as error:
        read_mask(path, PaletteMask(SANDSTONE_COLOURS))
    assert_error(
        error,
        path,
        "unexpected mask colours [(12, 200, 7) (100 px)]",
        "expected (0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 255, 0) (within 40)",
    )


def test_palette_lists_a_few_unexpected_colours_most_frequent_first() -> None:
    pixels = np.zeros((10, 10, 3), np.uint8)
    for i in range(8):
        pixels[i, : i + 1] = (100, 100 + i * 10, 100)
    with pytest.raises(DataError) as error:
        PaletteMask([(0, 0, 0)]).decode(pixels, "m.png")
    message = str(error.value)
    assert "[(100, 170, 100) (8 px), (100, 160, 100) (7 px)," in message
    assert "... and 3 more]" in message


def test_palette_reads_colours_of_a_palette_png(tmp_path: Path) -> None:
    ids = blobs()
    png = Image.fromarray(ids, "P")
    png.putpalette([c for colour in SANDSTONE_COLOURS for c in colour])
    png.save(tmp_path / "p.png")
    np.testing.assert_array_equal(
        read_mask(tmp_path / "p.png", PaletteMask(SANDSTONE_COLOURS))[0], ids
    )


# -- grey and index -----------------------------------------------------------------------------


def test_grey_sandstone_values(tmp_path: Path) -> None:
    ids = blobs()
    path = save(tmp_path / "Sandstone_Versa0180_mask.png", np.array(SANDSTONE_GREYS, np.uint8)[ids])
    mask, report = read_mask(path, {"type": "grey", "values": SANDSTONE_GREYS})
    np.testing.assert_array_equal(mask, ids)
    assert report.far == 0


def test_grey_refuses_far_values_and_maps_ignore(tmp_path: Path) -> None:
    grey = np.array([[33, 40, 231, 128]], np.uint8)
    with pytest.raises(DataError) as error:
        GreyMask(SANDSTONE_GREYS).decode(grey, tmp_path / "m.png")
    assert_error(error, tmp_path / "m.png", "[128 (1 px)]", "expected grey values 33, 65, 201")
    decoder = GreyMask(SANDSTONE_GREYS, ignore_value=128, ignore_index=255)
    np.testing.assert_array_equal(decoder.decode(grey, "m.png")[0], [[0, 0, 3, 255]])
    mask, report = GreyMask(SANDSTONE_GREYS).decode(grey, "m.jpg")
    np.testing.assert_array_equal(mask, [[0, 0, 3, 1]])
    assert report.far == 1 and report.reference == "every class value"


def test_index_camvid_annot(tmp_path: Path) -> None:
    ids = (np.arange(360 * 480).reshape(360, 480) % 12).astype(np.uint8)
    path = save(tmp_path / "0001TP_006690.png", ids)
    decoder = IndexMask(num_classes=11, ignore_index=11)
    mask, report = read_mask(path, decoder)
    np.testing.assert_array_equal(mask, ids)
    assert report.far == 0
    ids[0, :5] = 12
    save(path, ids)
    with pytest.raises(DataError) as error:
        read_mask(path, decoder)
    assert_error(error, path, "unexpected mask values [12 (5 px)]; expected 0..10 or 11 (ignore)")


def test_index_uses_palette_indices_not_colours(tmp_path: Path) -> None:
    ids = blobs(classes=3)
    png = Image.fromarray(ids, "P")
    png.putpalette([128, 0, 0, 0, 128, 0, 128, 128, 0])  # VOC-style colours
    png.save(tmp_path / "2007_000032.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "2007_000032.png", IndexMask(3))[0], ids)


def test_index_refuses_colour_masks() -> None:
    pixels = colours(blobs(), SANDSTONE_COLOURS)
    with pytest.raises(DataError, match="use a palette decoder"):
        IndexMask(4).decode(pixels, "m.png")


# -- reports, config ----------------------------------------------------------------------------


def test_summarize_reports() -> None:
    reports = [MaskReport(f"m{i}.png", 100, 0) for i in range(3)]
    assert summarize_reports(reports) is None
    assert summarize_reports([]) is None
    reports = [
        MaskReport("masks/a_mask.jpg", 1_000_000, 3_000, 40.0, lossy=True),
        MaskReport("masks/b_mask.jpg", 2_000_000, 1_000, 40.0, lossy=True),
        MaskReport("masks/c_mask.jpg", 2_000_000, 0, 40.0, lossy=True),
    ]
    assert summarize_reports(reports) == (
        "JPEG masks: 4,000 of 5,000,000 pixels (0.08 %) in 2 of 3 files were far (> 40) from "
        "every class colour; worst: a_mask.jpg (0.3 %)"
    )


def test_build_mask_decoder() -> None:
    assert build_mask_decoder("binary") == BinaryMask()
    palette = build_mask_decoder({"type": "palette", "colors": [[0, 0, 255], [255, 0, 0]]})
    assert isinstance(palette, PaletteMask) and palette.colors == [(0, 0, 255), (255, 0, 0)]
    grey = build_mask_decoder({"type": "grey", "values": SANDSTONE_GREYS})
    assert isinstance(grey, GreyMask) and grey.num_classes == 4
    index = build_mask_decoder({"type": "index", "num_classes": 11, "ignore_index": 11})
    assert isinstance(index, IndexMask) and index.ignore_index == 11
    for decoder in (palette, grey, index, BinaryMask(threshold=100)):
        assert build_mask_decoder(decoder.spec()) == decoder
    assert build_mask_decoder(index) is index


def test_build_mask_decoder_errors() -> None:
    with pytest.raises(ConfigurationError, match=r"valid choices .*: binary, grey, index, palette"):
        build_mask_decoder({"type": "rle"})
    with pytest.raises(ConfigurationError, match=r"unknown option.*colours; valid options: colors"):
        build_mask_decoder({"type": "palette", "colours": [[0, 0, 0]]})
    with pytest.raises(ConfigurationError, match="num_classes"):
        build_mask_decoder("index")
    with pytest.raises(ConfigurationError, match="ignore_color and ignore_index go together"):
        PaletteMask(SANDSTONE_COLOURS, ignore_color=(0, 0, 0))
    with pytest.raises(ConfigurationError, match="outside the class ids"):
        GreyMask(SANDSTONE_GREYS, ignore_value=0, ignore_index=2)
    with pytest.raises(ConfigurationError, match="not an RGB colour"):
        PaletteMask([(0, 0, 256)])


def test_is_lossy(tmp_path: Path) -> None:
    assert is_lossy("a.JPG") and is_lossy("a.jpeg") and not is_lossy("a.png")
    pixels = colours(blobs(40, 40), SANDSTONE_COLOURS)
    assert is_lossy(save(tmp_path / "lossy.webp", pixels, quality=80))
    assert not is_lossy(save(tmp_path / "lossless.webp", pixels, lossless=True))


# -- real data ----------------------------------------------------------------------------------


def test_real_ph2_masks() -> None:
    folder = shared_data() / "ph2_bmp" / "PH2Dataset" / "PH2 Dataset images"
    rgb = folder / "IMD002" / "IMD002_lesion" / "IMD002_lesion.bmp"
    one_bit = folder / "IMD003" / "IMD003_lesion" / "IMD003_lesion.bmp"
    if not rgb.exists():
        pytest.skip(f"PH2 BMP masks not found at {folder}")
    assert Image.open(rgb).mode == "RGB" and Image.open(one_bit).mode == "1"
    for path in (rgb, one_bit):
        mask, report = read_mask(path, "binary")
        assert set(np.unique(mask)) == {0, 1} and report.far == 0
        assert 0.05 < mask.mean() < 0.5


def test_real_sandstone_masks() -> None:
    folder = shared_data() / "sandstone"
    path = sorted((folder / "Train_masks").glob("*.tif"))[0]
    mask, report = read_mask(path, PaletteMask(SANDSTONE_COLOURS))
    assert report.far == 0 and mask.shape == (1024, 996)
    shares = np.bincount(mask.ravel(), minlength=4) / mask.size
    assert shares[0] > 0.4 and shares[1] > 0.4 and 0 < shares[2] < 0.1 and 0 < shares[3] < 0.1
    grey, report = read_mask(folder / "Sandstone_Versa0180_mask.png", GreyMask(SANDSTONE_GREYS))
    assert report.far == 0 and set(np.unique(grey)) == {0, 1, 2, 3}


def test_real_camvid_annot() -> None:
    paths = sorted((shared_data() / "camvid" / "trainannot").glob("*.png"))
    if not paths:
        pytest.skip("CamVid annots not found")
    mask, report = read_mask(paths[0], {"type": "index", "num_classes": 11, "ignore_index": 11})
    assert mask.shape == (360, 480) and mask.max() <= 11 and report.far == 0
