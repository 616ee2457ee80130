"""Reading images: every supported format and mode, and one clear DataError line per bad file."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_seg.data.io import (
    IMAGE_SUFFIXES,
    DataError,
    image_size,
    is_image_file,
    read_image,
)
from lightning_seg.errors import ConfigurationError

RNG = np.random.default_rng(0)
RGB = (RNG.random((24, 32, 3)) * 255).astype(np.uint8)


def smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth colour image: JPEG keeps it close, so lossy round trips can be compared."""
    yy, xx = np.mgrid[:height, :width]
    return np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], axis=2).astype(
        np.uint8
    )


def write(path: Path, array: np.ndarray, mode: str | None = None, **params) -> Path:
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path, **params)
    return path


def assert_names(error: pytest.ExceptionInfo[DataError], path: Path, problem: str) -> None:
    """The one-line message starts with the file and says the problem."""
    message = str(error.value)
    assert message.startswith(f"{path}: "), message
    assert problem in message, message
    assert "\n" not in message
    assert error.value.path == str(path)


# -- formats and modes --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".tiff", ".webp"])
def test_lossless_rgb_round_trip(tmp_path: Path, suffix: str) -> None:
    params = {"lossless": True} if suffix == ".webp" else {}
    path = write(tmp_path / f"img{suffix}", RGB, **params)
    image = read_image(path)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8
    assert image.flags.c_contiguous and image.flags.writeable
    np.testing.assert_array_equal(image, RGB)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg_is_close(tmp_path: Path, suffix: str) -> None:
    original = smooth_rgb()
    image = read_image(write(tmp_path / f"photo{suffix}", original, quality=95))
    assert image.shape == original.shape
    assert np.abs(image.astype(int) - original).mean() < 3


def test_palette_gif_expands_to_its_colours(tmp_path: Path) -> None:
    indices = (np.arange(24 * 32).reshape(24, 32) % 3).astype(np.uint8)
    gif = Image.fromarray(indices, "P")
    gif.putpalette([10, 20, 30, 200, 100, 0, 0, 255, 0])
    gif.save(tmp_path / "a.gif")
    image = read_image(tmp_path / "a.gif")
    expected = np.array([[10, 20, 30], [200, 100, 0], [0, 255, 0]], dtype=np.uint8)[indices]
    np.testing.assert_array_equal(image, expected)


def test_palette_png_with_transparency_reads_without_warnings(tmp_path: Path) -> None:
    indices = (np.arange(64).reshape(8, 8) % 2).astype(np.uint8)
    png = Image.fromarray(indices, "P")
    png.putpalette([0, 0, 0, 255, 0, 0])
    png.save(tmp_path / "t.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(tmp_path / "t.png")
    assert image.shape == (8, 8, 3) and set(image[..., 0].ravel()) == {0, 255}


def test_grey_to_one_and_three_channels(tmp_path: Path) -> None:
    grey = RGB[..., 0]
    path = write(tmp_path / "grey.png", grey)
    one = read_image(path, channels=1)
    three = read_image(path, channels=3)
    assert one.shape == (24, 32, 1) and one.flags.c_contiguous
    np.testing.assert_array_equal(one[..., 0], grey)
    np.testing.assert_array_equal(three, np.repeat(grey[..., None], 3, axis=2))


def test_colour_to_one_channel_is_luminance(tmp_path: Path) -> None:
    path = write(tmp_path / "rgb.png", RGB)
    expected = np.asarray(Image.fromarray(RGB).convert("L"))
    np.testing.assert_array_equal(read_image(path, channels=1)[..., 0], expected)


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])
    image = read_image(write(tmp_path / "rgba.png", rgba))
    np.testing.assert_array_equal(image, RGB)


def test_one_bit_bmp_reads_as_0_255(tmp_path: Path) -> None:
    bits = RNG.random((20, 30)) > 0.5
    path = write(tmp_path / "bits.bmp", bits.astype(np.uint8) * 255, mode="1")
    assert Image.open(path).mode == "1"
    np.testing.assert_array_equal(read_image(path, channels=1)[..., 0], bits * 255)


def test_16_bit_scaled_by_the_range_it_uses(tmp_path: Path) -> None:
    # 12-bit data in a 16-bit PNG: 4095 is full white, not 4095 / 257 = 16.
    twelve = np.array([[0, 1024, 2048, 4095]], dtype=np.uint16)
    path = write(tmp_path / "twelve.png", twelve)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(read_image(path, channels=1)[..., 0], [[0, 64, 128, 255]])
    full = np.array([[0, 257, 65535]], dtype=np.uint16)
    image = read_image(write(tmp_path / "full.tif", full), channels=3)
    np.testing.assert_array_equal(image[0, :, 0], [0, 1, 255])
    assert image.shape == (1, 3, 3)


def test_exif_orientation_applied_to_jpeg(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: turn 90 degrees clockwise to view
    path = tmp_path / "phone.jpg"
    Image.fromarray(smooth_rgb(40, 60)).save(path, exif=exif, quality=95)
    assert read_image(path).shape == (60, 40, 3)
    assert image_size(path) == (60, 40)


def test_first_frame_of_a_multi_frame_tiff(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((8, 8), value, np.uint8)) for value in (10, 200)]
    frames[0].save(tmp_path / "stack.tif", save_all=True, append_images=frames[1:])
    assert read_image(tmp_path / "stack.tif", channels=1).max() == 10


def test_channels_must_be_1_or_3(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="channels"):
        read_image(write(tmp_path / "a.png", RGB), channels=4)


def test_image_size_is_height_width(tmp_path: Path) -> None:
    assert image_size(write(tmp_path / "a.png", RGB)) == (24, 32)


# -- bad files ----------------------------------------------------------------------------------


def truncated(tmp_path: Path, suffix: str) -> Path:
    path = write(tmp_path / f"IMD002{suffix}", (RNG.random((64, 64, 3)) * 255).astype(np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    path = truncated(tmp_path, suffix)
    with pytest.raises(DataError) as error:
        read_image(path)
    assert_names(error, path, "truncated or corrupt image (")
    # The header is intact, so the cheap size check cannot notice.
    assert image_size(path) == (64, 64)


def test_corrupt_bytes_in_png(tmp_path: Path) -> None:
    path = write(tmp_path / "a.png", (RNG.random((64, 64, 3)) * 255).astype(np.uint8))
    data = bytearray(path.read_bytes())
    data[200:400] = bytes(200)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as error:
        read_image(path)
    assert_names(error, path, "corrupt")


def test_broken_header_says_which_format_it_claims(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(DataError) as error:
        read_image(path)
    assert_names(error, path, "starts like a PNG file but its header is broken")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    for reader in (read_image, image_size):
        with pytest.raises(DataError) as error:
            reader(path)
        assert_names(error, path, "empty file (0 bytes)")


def test_text_file_with_an_image_suffix(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these masks were redrawn by hand in 2019\n")
    with pytest.raises(DataError) as error:
        read_image(path)
    assert_names(error, path, "not an image file (it contains text)")


def test_binary_junk_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / ".DS_Store"
    path.write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(range(256)) * 4)
    with pytest.raises(DataError) as error:
        image_size(path)
    assert_names(error, path, "not an image file")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        read_image(tmp_path / "gone.png")
    assert_names(error, tmp_path / "gone.png", "file not found")
    with pytest.raises(DataError) as error:
        read_image(tmp_path)
    assert_names(error, tmp_path, "is a directory")


def test_decompression_bomb_by_max_pixels(tmp_path: Path) -> None:
    path = write(tmp_path / "big.png", RGB)
    with pytest.raises(DataError) as error:
        read_image(path, max_pixels=100)
    assert_names(error, path, "too many pixels: 32 x 24 = 768 > max_pixels 100")
    assert read_image(path, max_pixels=768).shape == (24, 32, 3)


def test_pillow_bomb_warning_becomes_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "big.png", RGB)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # warns above 500, fails above 1000
    with pytest.raises(DataError) as error:
        read_image(path, max_pixels=None)
    assert_names(error, path, "decompression bomb")
    # Our own limit decides when given: Pillow's warning does not fire on top of it.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path, max_pixels=1000).shape == (24, 32, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # now over Pillow's hard limit
    with pytest.raises(DataError) as error:
        image_size(path)
    assert_names(error, path, "decompression bomb")


def test_data_error_fields_survive_pickling() -> None:
    error = pickle.loads(pickle.dumps(DataError("a/b.png", "empty file (0 bytes)")))
    assert (error.path, error.problem, str(error)) == (
        "a/b.png",
        "empty file (0 bytes)",
        "a/b.png: empty file (0 bytes)",
    )


def test_is_image_file() -> None:
    assert all(is_image_file(f"x{suffix}") for suffix in IMAGE_SUFFIXES)
    assert is_image_file("data/IMD002.BMP") and is_image_file(Path("a/car_01_mask.gif"))
    assert not is_image_file("notes.txt")
    assert not is_image_file(".DS_Store")
    assert not is_image_file("__MACOSX/._IMD002.bmp")
    assert all(suffix == suffix.lower() for suffix in IMAGE_SUFFIXES)
