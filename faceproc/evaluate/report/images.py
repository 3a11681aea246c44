"""Thumbnails for the report as JPEG `data:` URIs: source photos with their face box, and face crops.

Boxes are drawn on the photo as it displays, i.e. after its EXIF orientation is applied, which is
how Pillow's `exif_transpose` decodes it for detection. Reading is bounded
(file size, pixel count, only the crops the page shows) so the page stays cheap as data grows.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.fs as pafs
from PIL import Image, ImageDraw, ImageOps

from faceproc.core import storage
from faceproc.core.images import to_rgb_array
from faceproc.core.shards import iter_live_faces

THUMB_SIDE = 200  # longest side of an embedded photo, px
JPEG_QUALITY = 80
MAX_PREVIEW_BYTES = 64 * 1024 * 1024  # files larger than this are not decoded for a thumbnail
MAX_PREVIEW_PIXELS = 60_000_000  # nor images declaring more pixels than this

BOX_COLOUR = (0, 230, 118)  # bright green, drawn over a dark outline so it shows on any photo
BOX_COLOUR_WRONG = (255, 64, 64)

CropKey = tuple[str, int]  # (source_path, augment_index)


def photo_thumbnail(
    uri: str,
    box: Sequence[int] | None = None,
    *,
    wrong: bool = False,
    side: int = THUMB_SIDE,
) -> tuple[str | None, str | None]:
    """(JPEG data URI, None) of the photo at `uri` with `box` drawn, or (None, why not)."""
    try:
        raw = _read_limited(uri)
        if not raw:
            return None, "empty file"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(raw))
            w0, h0 = img.size
            if w0 * h0 > MAX_PREVIEW_PIXELS:
                return None, f"{w0}x{h0} px, too large to preview"
            orientation = img.getexif().get(0x0112, 1)
            logical = (h0, w0) if orientation in (5, 6, 7, 8) else (w0, h0)
            if img.format == "JPEG":
                img.draft("RGB", (side * 2, side * 2))  # decode big JPEGs at a reduced scale
            img = Image.fromarray(to_rgb_array(ImageOps.exif_transpose(img)))
            img.thumbnail((side, side), Image.Resampling.LANCZOS)
    except Image.DecompressionBombError:  # Pillow's own limit, met when the file is opened
        return None, "too large to preview"
    except Exception as exc:
        return None, _short_error(exc)
    if box is not None and len(box) == 4:
        sx, sy = img.width / logical[0], img.height / logical[1]
        x0, y0, x1, y1 = (float(v) for v in box)
        rect = [x0 * sx, y0 * sy, x1 * sx, y1 * sy]
        draw = ImageDraw.Draw(img)
        width = max(2, round(max(img.size) / 100))
        # a dark hairline on both sides of the coloured line keeps it visible on any background
        draw.rectangle(
            [rect[0] - 1, rect[1] - 1, rect[2] + 1, rect[3] + 1], outline=(20, 20, 20), width=width + 2
        )
        draw.rectangle(rect, outline=BOX_COLOUR_WRONG if wrong else BOX_COLOUR, width=width)
    return _jpeg_data_uri(img), None


def crop_thumbnail(png: bytes | None, side: int = THUMB_SIDE) -> tuple[str | None, str | None]:
    """A face crop (PNG bytes from a shard) re-encoded as a JPEG data URI, or (None, why not)."""
    if not png:
        return None, "no image bytes"
    try:
        with Image.open(io.BytesIO(png)) as img:
            thumb = Image.fromarray(to_rgb_array(img))
        thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
        return _jpeg_data_uri(thumb), None
    except Exception as exc:
        return None, _short_error(exc)


def load_crops(out_uri: str, split: str, manifest: pa.Table | None, wanted: set[CropKey]) -> dict[CropKey, bytes]:
    """PNG bytes of the live face rows of `split` in `wanted`.

    Streams the live rows in small batches and keeps only the wanted images, so memory is bounded
    by what the page shows, not by the dataset. What cannot be read is left out: the page shows a
    placeholder for it.
    """
    found: dict[CropKey, bytes] = {}
    if not wanted or manifest is None:
        return found
    try:
        for table in iter_live_faces(out_uri, split, ["source_path", "augment_index", "image"], manifest):
            columns = (table.column(c).to_pylist() for c in ("source_path", "augment_index", "image"))
            for path, aug, image in zip(*columns):
                key = (path, int(aug or 0))
                if key in wanted:
                    found.setdefault(key, image)
            if len(found) == len(wanted):
                break
    except Exception:  # an unreadable shard: the crops found so far are shown, the rest as placeholders
        pass
    return found


def _read_limited(uri: str) -> bytes:
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError("file not found")
    if info.size is not None and info.size > MAX_PREVIEW_BYTES:
        raise ValueError(f"{info.size / 1e6:.0f} MB, too large to preview")
    return storage.read_bytes(uri)


def _jpeg_data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _short_error(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, Image.UnidentifiedImageError):
        text = "not a decodable image"
    return text if len(text) < 120 else text[:117] + "..."
