"""decode_image: every supported input becomes HxWx3 uint8 RGB; every bad input a RejectError."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageFile

from faceproc.core.schema import RejectError, RejectReason
from faceproc.preprocess.decode import decode_image

MAX = 40_000_000
MIN = 32
RED = (255, 0, 0)
BLUE = (0, 0, 255)


def decode(data: bytes, max_pixels: int = MAX, min_side: int = MIN) -> np.ndarray:
    return decode_image(data, max_pixels=max_pixels, min_side=min_side)


def reject(data: bytes, reason: RejectReason, **kw: int) -> RejectError:
    with pytest.raises(RejectError) as info:
        decode(data, **kw)
    assert info.value.reason is reason, info.value
    assert info.value.detail  # a human-readable reason, never empty
    return info.value


def assert_rgb(arr: np.ndarray, height: int, width: int) -> None:
    assert arr.shape == (height, width, 3)
    assert arr.dtype == np.uint8
    assert arr.flags.c_contiguous


def assert_colour(arr: np.ndarray, colour: tuple[int, int, int], tol: int = 0) -> None:
    diff = np.abs(arr.reshape(-1, 3).astype(int) - np.array(colour)).max()
    assert diff <= tol, f"expected {colour} +-{tol}, got e.g. {tuple(arr.reshape(-1, 3)[0])}"


def noise(size: tuple[int, int] = (128, 96), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# --- formats and modes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "save", "tol"),
    [
        ("PNG", {}, 0),
        ("JPEG", {"quality": 95}, 8),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("WEBP", {"lossless": True}, 0),
        ("WEBP", {"quality": 90}, 8),
    ],
)
def test_rgb_formats_keep_colour(image_bytes, fmt, save, tol):
    arr = decode(image_bytes(fmt, size=(64, 48), color=RED, **save))
    assert_rgb(arr, 48, 64)
    assert_colour(arr, RED, tol)


def test_output_is_writeable(image_bytes):
    arr = decode(image_bytes("PNG"))
    arr[0, 0] = 0  # downstream steps may draw or normalise in place


def test_noise_png_round_trips_exactly(encode_image):
    im = noise()
    np.testing.assert_array_equal(decode(encode_image(im, "PNG")), np.asarray(im))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_grayscale_becomes_three_equal_channels(image_bytes, fmt):
    arr = decode(image_bytes(fmt, mode="L", color=100))
    assert_rgb(arr, 48, 64)
    assert_colour(arr, (100, 100, 100), tol=2)


def test_one_bit_png(image_bytes):
    assert_colour(decode(image_bytes("PNG", mode="1", color=1)), (255, 255, 255))


def test_cmyk_jpeg(encode_image):
    data = encode_image(Image.new("RGB", (64, 48), RED).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    arr = decode(data)
    assert_rgb(arr, 48, 64)
    assert_colour(arr, RED, tol=8)


def test_palette_png(encode_image):
    im = Image.new("P", (40, 40), 0)
    im.putpalette([*RED, *BLUE] + [0] * 762)
    im.paste(1, (0, 20, 40, 40))
    arr = decode(encode_image(im, "PNG"))
    assert_rgb(arr, 40, 40)
    assert_colour(arr[:20], RED)
    assert_colour(arr[20:], BLUE)


def test_alpha_is_composited_onto_white(image_bytes):
    arr = decode(image_bytes("PNG", mode="RGBA", color=(255, 0, 0, 128)))
    assert_rgb(arr, 48, 64)
    assert_colour(arr, (255, 127, 127), tol=1)
    assert_colour(decode(image_bytes("PNG", mode="RGBA", color=(0, 0, 0, 0))), (255, 255, 255))


def test_gray_alpha_png(image_bytes):
    assert_colour(decode(image_bytes("PNG", mode="LA", color=(0, 0))), (255, 255, 255))
    assert_colour(decode(image_bytes("PNG", mode="LA", color=(50, 255))), (50, 50, 50))


def test_palette_transparency_becomes_white(encode_image):
    im = Image.new("P", (40, 40), 0)
    im.putpalette([*RED, *BLUE] + [0] * 762)
    im.paste(1, (0, 20, 40, 40))
    arr = decode(encode_image(im, "PNG", transparency=0))
    assert_colour(arr[:20], (255, 255, 255))
    assert_colour(arr[20:], BLUE)


def test_rgb_trns_colour_key_becomes_white(image_bytes):
    assert_colour(decode(image_bytes("PNG", color=RED, transparency=RED)), (255, 255, 255))


def test_16bit_grayscale_png_is_scaled_not_clipped(encode_image):
    ramp = np.linspace(0, 65535, 64 * 48).round().astype(np.uint16).reshape(48, 64)
    ramp[0, 0], ramp[0, 1] = 1000, 32896
    data = encode_image(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    arr = decode(data)
    assert_rgb(arr, 48, 64)
    assert arr.max() == 255 and arr.min() == 0
    assert tuple(arr[0, 0]) == (4, 4, 4)  # clipping would give 255
    assert tuple(arr[0, 1]) == (128, 128, 128)
    np.testing.assert_allclose(arr[..., 0], ramp / 257.0, atol=0.51)


def test_16bit_tiff_is_scaled(encode_image):
    data = encode_image(Image.fromarray(np.full((40, 40), 65535, np.uint16)), "TIFF")
    assert_colour(decode(data), (255, 255, 255))


def test_float_tiff_in_unit_range_is_scaled(encode_image):
    data = encode_image(Image.fromarray(np.full((40, 40), 0.5, np.float32)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "F"
    assert_colour(decode(data), (128, 128, 128))


def test_48bit_rgb_png(png_by_hand):
    rows = struct.pack(">HHH", 65535, 32896, 0) * (40 * 32)
    arr = decode(png_by_hand(40, 32, 16, 2, rows))
    assert_rgb(arr, 32, 40)
    assert_colour(arr, (255, 128, 0), tol=1)


def test_gif_first_frame(encode_image):
    frames = [Image.new("RGB", (40, 40), RED), Image.new("RGB", (40, 40), BLUE)]
    data = encode_image(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    arr = decode(data)
    assert_rgb(arr, 40, 40)
    assert_colour(arr, RED, tol=2)


def test_exif_orientation_is_applied(encode_image):
    im = Image.new("RGB", (64, 32), RED)  # stored: 64 wide, 32 tall, left half red, right half blue
    im.paste(BLUE, (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    arr = decode(encode_image(im, "JPEG", quality=95, exif=exif.tobytes()))
    assert_rgb(arr, 64, 32)  # transposed
    assert_colour(arr[4:28], RED, tol=10)  # the stored left side is now the top
    assert_colour(arr[36:60], BLUE, tol=10)


def test_format_is_sniffed_from_content(image_bytes):
    # Only bytes are passed; a PNG inside a file named .jpg decodes all the same.
    assert_colour(decode(image_bytes("PNG", color=BLUE)), BLUE)


# --- rejects -------------------------------------------------------------------------------


def test_empty_file():
    reject(b"", RejectReason.EMPTY_FILE)


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(1).bytes(4096),
        b"this is a text file, not a photo\n" * 40,
        b"\x00",
    ],
    ids=["random", "text", "one-byte"],
)
def test_not_an_image(data):
    reject(data, RejectReason.NOT_AN_IMAGE)


def test_zip_is_not_an_image():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("photo.jpg", b"x" * 1000)
    reject(buf.getvalue(), RejectReason.NOT_AN_IMAGE)


def test_loader_is_strict_about_truncation():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # else truncated files decode with grey fill


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_cut_in_half_is_truncated(encode_image, fmt):
    data = encode_image(noise(), fmt)
    reject(data[: len(data) // 2], RejectReason.TRUNCATED)


@pytest.mark.parametrize("cut", [12, 20, 30])
def test_png_cut_inside_header_is_truncated(image_bytes, cut):
    reject(image_bytes("PNG")[:cut], RejectReason.TRUNCATED)


def test_png_with_corrupt_data_is_truncated(encode_image):
    data = bytearray(encode_image(noise(), "PNG"))
    data[len(data) // 2] ^= 0xFF  # breaks the IDAT checksum
    reject(bytes(data), RejectReason.TRUNCATED)


def test_too_large_by_max_pixels(image_bytes):
    err = reject(image_bytes("PNG", size=(200, 100)), RejectReason.TOO_LARGE, max_pixels=10_000)
    assert "200x100" in err.detail
    decode(image_bytes("PNG", size=(100, 100)), max_pixels=10_000)  # exactly at the limit is fine


def _no_bomb_warning(caught: list[warnings.WarningMessage]) -> None:
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_huge_declared_size_is_refused_before_decoding(png_by_hand):
    data = png_by_hand(30_000, 30_000, 1, 0)  # 900 megapixels declared, under 100 bytes on disk
    assert len(data) < 100
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        err = reject(data, RejectReason.TOO_LARGE)
    assert time.perf_counter() - start < 1.0
    assert "900000000" in err.detail
    _no_bomb_warning(caught)


def test_size_in_pillow_warning_band_maps_to_too_large(png_by_hand):
    # 100 megapixels: above Image.MAX_IMAGE_PIXELS (warning) but below twice it (error).
    data = png_by_hand(10_000, 10_000, 1, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaking DecompressionBombWarning would fail the test
        err = reject(data, RejectReason.TOO_LARGE)
    assert "10000x10000" in err.detail


def test_pillow_bomb_error_maps_to_too_large_even_with_a_high_limit(png_by_hand):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reject(png_by_hand(30_000, 30_000, 1, 0), RejectReason.TOO_LARGE, max_pixels=10**12)
    _no_bomb_warning(caught)


@pytest.mark.parametrize("size", [(20, 100), (100, 20), (31, 31)])
def test_too_small(image_bytes, size):
    err = reject(image_bytes("PNG", size=size), RejectReason.TOO_SMALL)
    assert f"{size[0]}x{size[1]}" in err.detail


def test_min_side_is_inclusive(image_bytes):
    assert_rgb(decode(image_bytes("PNG", size=(32, 32))), 32, 32)


def test_unsupported_bmp_compression(image_bytes):
    data = bytearray(image_bytes("BMP"))
    data[30:34] = struct.pack("<I", 9)  # BITMAPINFOHEADER compression: no such method
    err = reject(bytes(data), RejectReason.UNSUPPORTED)
    assert "BMP" in err.detail


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's own "Corrupt EXIF data" notes
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_damaged_files_only_ever_raise_reject_error(encode_image, fmt):
    """Flip bytes and cut files at many places: the result is an RGB array or a RejectError."""
    good = encode_image(noise((40, 40), seed=2), fmt)
    rng = np.random.default_rng(3)
    variants = [good[:cut] for cut in rng.integers(1, len(good), 10)]
    for _ in range(25):
        bad = bytearray(good)
        for pos in rng.integers(0, len(good), int(rng.integers(1, 4))):
            bad[pos] = int(rng.integers(0, 256))
        variants.append(bytes(bad))
    for data in variants:
        try:
            arr = decode(data)
        except RejectError:
            continue
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3


def test_decoding_on_several_threads_leaves_the_warning_filters_as_they_were(image_bytes):
    """The driver decodes on a thread per core; the warning filters decoding swaps in are process-wide,
    so an interleaved swap could leave one thread's filter (ignore every warning) behind for good."""
    from concurrent.futures import ThreadPoolExecutor

    photo, broken = image_bytes("JPEG", size=(400, 300)), b"\x89PNG\r\n\x1a\n" + b"\0" * 40
    before = list(warnings.filters)

    def decode_some(_: int) -> None:
        for _ in range(100):
            decode(photo)
            reject(broken, RejectReason.TRUNCATED)

    with ThreadPoolExecutor(4) as threads:
        list(threads.map(decode_some, range(4)))
    assert warnings.filters == before
