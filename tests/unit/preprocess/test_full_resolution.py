"""Big JPEGs decoded at reduced size for detection, boxes and crops in full resolution (real MTCNN)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from faceproc.config import PreprocessConfig
from faceproc.preprocess.decode import decode_image, decode_reduced
from faceproc.preprocess.detector import FaceDetector
from faceproc.preprocess.full_resolution import needs_full_resolution, to_full_resolution
from faceproc.preprocess.geometry import face_crop
from tests.conftest import DATASET

PHOTO = DATASET / "train/madonna/httpssmediacacheakpinimgcomxfeebfdccajpg.jpg"
PREP = PreprocessConfig()


def _jpeg(im: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def _twelve_megapixels(face_width: int | None = None) -> bytes:
    """A 4000x3000 JPEG: the photo upscaled to fill it, or pasted `face_width` wide on grey."""
    photo = Image.open(PHOTO).convert("RGB")
    if face_width is None:
        return _jpeg(photo.resize((4000, 3000), Image.Resampling.BICUBIC))
    canvas = Image.new("RGB", (4000, 3000), (128, 128, 128))
    canvas.paste(photo.resize((face_width, round(face_width * photo.height / photo.width))), (1700, 1200))
    return _jpeg(canvas)


def test_a_big_jpeg_decodes_at_the_dct_scale_detection_needs():
    decoded = decode_reduced(_twelve_megapixels(), PREP.max_pixels, PREP.min_side, 640)
    assert decoded.image.shape == (750, 1000, 3) and (decoded.fx, decoded.fy) == (4.0, 4.0)
    assert decoded.full_size == (4000, 3000)
    small = decode_reduced(_jpeg(Image.new("RGB", (900, 600))), PREP.max_pixels, PREP.min_side, 640)
    assert not small.reduced and small.image.shape == (600, 900, 3)  # 1/2 would go below 640
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees
    turned = decode_reduced(_jpeg(Image.new("RGB", (4000, 2000)), exif=exif.tobytes()), PREP.max_pixels,
                            PREP.min_side, 640)
    assert turned.image.shape == (1000, 500, 3) and turned.full_size == (2000, 4000)


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(PREP)


def _full_and_reduced(detector: FaceDetector, data: bytes) -> tuple[dict, dict]:
    full = detector.detect_all(decode_image(data, PREP.max_pixels, PREP.min_side))[0]
    decoded = decode_reduced(data, PREP.max_pixels, PREP.min_side, PREP.detect_max_side)
    (reduced,) = to_full_resolution(detector.detect_all(decoded.image)[:1], decoded, data, PREP)
    return full, reduced


def _iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_a_face_filling_a_big_photo_keeps_the_reduced_crop(detector):
    full, reduced = _full_and_reduced(detector, _twelve_megapixels())
    assert _iou(full["box"], reduced["box"]) > 0.9, (full["box"], reduced["box"])  # in full-resolution pixels
    assert not needs_full_resolution([v / 4 for v in full["box"]], PREP.face_margin, PREP.face_size)
    difference = np.abs(full["face"].astype(int) - reduced["face"].astype(int)).mean()
    assert reduced["aligned"] and difference < 12, difference  # the same face, framed the same


def test_a_small_face_in_a_big_photo_is_cut_from_full_resolution(detector):
    data = _twelve_megapixels(face_width=360)
    full, reduced = _full_and_reduced(detector, data)
    assert _iou(full["box"], reduced["box"]) > 0.8, (full["box"], reduced["box"])  # MTCNN on a 22-pixel face varies
    image = decode_image(data, PREP.max_pixels, PREP.min_side)
    cut = face_crop(image, reduced["box"], reduced["keypoints"], PREP.face_margin, PREP.face_size, PREP.align)[0]
    assert np.array_equal(reduced["face"], cut)  # from the full decode, at the mapped box and keypoints
    small = cv2.resize(image, (1000, 750), interpolation=cv2.INTER_AREA)
    quarter = {name: (x / 4, y / 4) for name, (x, y) in reduced["keypoints"].items()}
    upsampled = face_crop(small, [v / 4 for v in reduced["box"]], quarter, PREP.face_margin, PREP.face_size, PREP.align)[0]
    sharpness = [cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() for c in (cut, upsampled)]
    assert sharpness[0] > 1.5 * sharpness[1], sharpness  # what a crop of the reduced decode would have lost
