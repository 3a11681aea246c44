"""Turn the bytes of one input file into an RGB array, or a RejectError saying why not.

Decoding goes by content (Pillow sniffs the format), never by file name. Every failure on
bad input becomes a RejectError with a closed reason, so one odd file never fails a block.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from faceproc.core.images import to_rgb_array
from faceproc.core.schema import RejectError, RejectReason

# Leading bytes of formats we expect, with the Pillow plugin that reads them. A file Pillow
# cannot identify that starts like one of these is a damaged or unsupported image, not some
# other kind of file; re-opening it with that plugin tells which (Image.open hides the error).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

# Error messages that mean "Pillow cannot handle this kind of image", not "the data is damaged".
_UNSUPPORTED_HINTS = re.compile(
    r"unsupported|not supported|not yet supported|not available|not implemented|cannot handle"
    r"|unknown pixel mode|unknown data organization|ghostscript",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Decoded:
    """A decoded photo, possibly at reduced size: pixel (x, y) of `image` covers (x * fx, y * fy) of the
    full-resolution upright photo (fx = fy = 1 when it was decoded at full size)."""

    image: np.ndarray
    fx: float = 1.0
    fy: float = 1.0

    @property
    def reduced(self) -> bool:
        return self.fx > 1.0 or self.fy > 1.0

    @property
    def full_size(self) -> tuple[int, int]:
        """(width, height) of the full-resolution upright photo."""
        height, width = self.image.shape[:2]
        return round(width * self.fx), round(height * self.fy)


def decode_image(data: bytes, max_pixels: int, min_side: int) -> np.ndarray:
    """Decode `data` to a C-contiguous HxWx3 uint8 RGB array, at full resolution.

    The declared size is checked before any pixel data is decoded, so a small file that
    declares a huge image costs nothing. Raises RejectError (and nothing else) for bad input.
    """
    return decode_reduced(data, max_pixels, min_side, None).image


def decode_reduced(data: bytes, max_pixels: int, min_side: int, longest_side: int | None) -> Decoded:
    """`decode_image`, but a JPEG larger than `longest_side` is decoded at the smallest of libjpeg's
    DCT scales (1/2, 1/4, 1/8) that keeps its longest side at least `longest_side` (Pillow's draft
    mode): a 12-megapixel photo costs a sixteenth of the pixels when detection needs 640. The size
    limits apply to the full image. None decodes every image at full size."""
    if not data:
        raise RejectError(RejectReason.EMPTY_FILE, "the file is empty (0 bytes)")
    try:
        return _decode(data, max_pixels, min_side, longest_side)
    except RejectError:
        raise
    except Image.DecompressionBombError as e:
        # Pillow's own limit (2 x Image.MAX_IMAGE_PIXELS), hit before ours could be checked.
        raise RejectError(RejectReason.TOO_LARGE, _bomb_detail(e, max_pixels)) from None
    except MemoryError:
        raise RejectError(RejectReason.TOO_LARGE, "not enough memory to decode the image") from None
    except Exception as e:  # noqa: BLE001 - the boundary: bad input must become a reject, not a crash
        raise RejectError(RejectReason.UNSUPPORTED, f"cannot decode: {type(e).__name__}: {e}") from None


def _decode(data: bytes, max_pixels: int, min_side: int, longest_side: int | None) -> Decoded:
    im = _open(data)
    fmt = im.format or "image"
    width, height = im.size
    if width * height > max_pixels:
        raise RejectError(
            RejectReason.TOO_LARGE,
            f"{fmt} declares {width}x{height} = {width * height} pixels, more than max_pixels={max_pixels}",
        )
    if min(width, height) < min_side:
        raise RejectError(RejectReason.TOO_SMALL, f"{fmt} is {width}x{height}, shorter side below min_side={min_side}")
    if longest_side and fmt == "JPEG" and max(width, height) > longest_side:
        k = longest_side / max(width, height)
        im.draft(im.mode, (max(1, math.ceil(width * k)), max(1, math.ceil(height * k))))
    stored = im.size  # after draft: the size the pixels are decoded at
    _load(im, fmt)
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - damaged EXIF should not cost a good photo; keep it as stored
        pass
    try:
        rgb = to_rgb_array(im)
    except Exception as e:  # noqa: BLE001
        raise RejectError(RejectReason.UNSUPPORTED, f"{fmt} mode {im.mode} cannot be converted to RGB: {e}") from None
    out = np.ascontiguousarray(rgb, dtype=np.uint8)
    out = out if out.flags.writeable else out.copy()  # arrays over Pillow's buffer are read-only
    fx, fy = width / stored[0], height / stored[1]
    turned = out.shape[:2] != (stored[1], stored[0])  # EXIF orientation swapped the axes
    return Decoded(out, *((fy, fx) if turned else (fx, fy)))


_FILTERS_LOCK = threading.Lock()


@contextlib.contextmanager
def _ignoring(category: type[Warning]) -> Iterator[None]:
    """`category` ignored inside the block. catch_warnings swaps the process-wide filter list on entry
    and exit, so threads (the driver decodes on several) take turns, or one could restore another's."""
    with _FILTERS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", category)
        yield


def _open(data: bytes) -> Image.Image:
    """Read the header only; Pillow's bomb warning is silenced because our own max_pixels check follows."""
    try:
        with _ignoring(Image.DecompressionBombWarning):
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise
    except Exception:  # noqa: BLE001 - UnidentifiedImageError, or a plugin failing on a damaged header
        pass
    fmt = next((name for sig, name in _SIGNATURES if data.startswith(sig)), None)
    if fmt is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        fmt = "WEBP"
    if fmt is None:
        raise RejectError(RejectReason.NOT_AN_IMAGE, f"not a recognised image format ({len(data)} bytes)")
    why = _plugin_error(data, fmt)
    if _UNSUPPORTED_HINTS.search(why):
        raise RejectError(RejectReason.UNSUPPORTED, f"{fmt} variant Pillow cannot read: {why}")
    raise RejectError(RejectReason.TRUNCATED, f"{fmt} header is truncated or corrupt: {why}")


def _plugin_error(data: bytes, fmt: str) -> str:
    """The error the format's own plugin raises on `data`, which Image.open swallows."""
    Image.init()
    factory = Image.OPEN.get(fmt, (None, None))[0]
    if factory is None:
        return "no Pillow plugin for this format"
    try:
        with _ignoring(Warning):
            factory(io.BytesIO(data), "")
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"
    return "cannot identify image file"


def _load(im: Image.Image, fmt: str) -> None:
    """Decode the pixel data (the first frame of an animation); map failures to truncated or unsupported.
    Only a photo declaring more than Pillow's MAX_IMAGE_PIXELS (whose bomb warning our own max_pixels
    check has answered) is decoded with the warning filtered, one thread at a time; the rest in parallel."""
    limit = Image.MAX_IMAGE_PIXELS
    warns = bool(limit) and im.width * im.height > limit
    try:
        with _ignoring(Image.DecompressionBombWarning) if warns else contextlib.nullcontext():
            im.load()
    except (Image.DecompressionBombError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001
        if _UNSUPPORTED_HINTS.search(str(e)):
            raise RejectError(RejectReason.UNSUPPORTED, f"{fmt} variant Pillow cannot decode: {e}") from None
        raise RejectError(RejectReason.TRUNCATED, f"{fmt} pixel data is truncated or corrupt: {e}") from None


def _bomb_detail(error: Exception, max_pixels: int) -> str:
    """Pillow refuses before we see the size; recover the pixel count from its message."""
    match = re.search(r"\((\d+) pixels\)", str(error))
    if match and int(match.group(1)) > max_pixels:
        return f"declares {match.group(1)} pixels, more than max_pixels={max_pixels}"
    return f"refused by Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS): {error}"
