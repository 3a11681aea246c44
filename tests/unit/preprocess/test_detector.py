"""faceproc.detect: the pure box helpers, and FaceDetector with the real MTCNN on real photos."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from faceproc.config import PreprocessConfig
from faceproc.preprocess.detector import (
    FaceDetector,
    crop_face,
    detection_scale,
    downscale_for_detection,
    expand_and_clamp,
    map_to_original,
    select_face,
)

DATA = Path(__file__).resolve().parents[3] / "data" / "5-celebrity-faces-dataset"

# Photos with one clear face (MTCNN confidence >= 0.999), one per person, plus the PNG named .jpg.
ONE_FACE = [
    "train/ben_afflek/httpcsvkmeuaeccjpg.jpg",
    "train/elton_john/httpsdfrpwlycscloudfrontnetdeltonjohnjpg.jpg",
    "train/jerry_seinfeld/httpimagesrottentomatoescomimagesspotlightsnewsjerryseinfeldjpg.jpg",
    "train/madonna/httpssmediacacheakpinimgcomxfeebfdccajpg.jpg",
    "train/mindy_kaling/httpimagesnymagcomimagesdailymindykalingxjpg.jpg",
    "train/ben_afflek/httpwwwrumenewscomwpcontentuploadsbenafflekxpng.jpg",
]
# Two faces at confidence >= 0.9 (Jerry Seinfeld and Julia Louis-Dreyfus).
TWO_FACES = (
    "train/jerry_seinfeld/"
    "httpwwweonlinecomresizewwweonlinecomeolimagesEntireSitersxjerryseinfeldjulialouisdreyfusjwjpg.jpg"
)
# A face MTCNN rates about 0.84: below the 0.9 threshold.
WEAK_FACE = "val/elton_john/httpafilesbiographycomimageuploadcfillcssrgbdprgfacehqwMTEODAOTcxNjcMjczMjkzjpg.jpg"

CONFIG = PreprocessConfig(min_face_confidence=0.9, face_margin=0.1, face_size=160, detect_max_side=640,
                          detect_batch_size=8)
EMPTY = np.zeros((0, 0, 3), np.uint8)

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="dataset not fetched (run `faceproc fetch-data`)")


def load(relative: str) -> np.ndarray:
    with Image.open(DATA / relative) as im:
        return np.asarray(im.convert("RGB"))


def objects(items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def make_batch(images: list[np.ndarray], reasons: list[str] | None = None, details: list[str] | None = None
               ) -> dict[str, np.ndarray]:
    n = len(images)
    return {
        "path": np.array([f"/photos/{i}.jpg" for i in range(n)]),
        "sha256": np.array([f"{i:064x}" for i in range(n)]),
        "split": np.array(["train"] * n),
        "label": np.array(["someone"] * n),
        "label_id": np.arange(n, dtype=np.int64) + 10,
        "image": objects(images),
        "reason": np.array(reasons or [""] * n),
        "detail": np.array(details or [""] * n),
    }


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(CONFIG)


# --------------------------------------------------------------------------- select_face


def face(box, confidence):
    return {"box": box, "confidence": confidence}


def test_select_face_prefers_confidence_times_area():
    faces = [
        face((0, 0, 10, 10), 0.99),  # area 100 -> 99
        face((0, 0, 30, 30), 0.92),  # area 900 -> 828: the winner
        face((0, 0, 20, 20), 0.999),  # area 400 -> 399.6
    ]
    assert select_face(faces, 0.9) == 1


def test_select_face_ignores_faces_below_threshold():
    faces = [face((0, 0, 100, 100), 0.89), face((0, 0, 10, 10), 0.95)]
    assert select_face(faces, 0.9) == 1
    assert select_face(faces, 0.96) is None
    assert select_face([face((0, 0, 10, 10), 0.9)], 0.9) == 0  # the threshold itself qualifies


def test_select_face_none_for_no_faces_and_first_on_tie():
    assert select_face([], 0.5) is None
    assert select_face([face((0, 0, 10, 10), 0.95), face((5, 5, 15, 15), 0.95)], 0.9) == 0


# --------------------------------------------------------------------------- expand_and_clamp / crop


def test_clamp_negative_corners_to_zero_not_abs():
    # The notebook's abs() would turn (-20, -10) into (20, 10), cutting off part of the face.
    assert expand_and_clamp((-20, -10, 50, 60), 0.0, 100, 100) == (0, 0, 50, 60)


def test_clamp_boxes_beyond_the_far_edges():
    assert expand_and_clamp((80, 90, 130, 150), 0.0, 100, 120) == (80, 90, 100, 120)
    assert expand_and_clamp((-5, -5, 500, 500), 0.2, 64, 48) == (0, 0, 64, 48)


def test_clamp_box_outside_the_image_keeps_one_pixel():
    x0, y0, x1, y1 = expand_and_clamp((150, 150, 170, 170), 0.0, 100, 80)
    assert (x0, y0, x1, y1) == (99, 79, 100, 80)
    x0, y0, x1, y1 = expand_and_clamp((-50, -40, -10, -5), 0.0, 100, 80)
    assert (x0, y0, x1, y1) == (0, 0, 1, 1)


def test_margin_is_a_fraction_of_box_size_on_each_side():
    # 20 wide, 40 high, margin 0.1: 2 px left/right, 4 px top/bottom.
    assert expand_and_clamp((40, 40, 60, 80), 0.1, 200, 200) == (38, 36, 62, 84)
    # fractional results widen outwards (floor the start, ceil the end)
    assert expand_and_clamp((10.4, 10.6, 20.2, 20.5), 0.0, 100, 100) == (10, 10, 21, 21)
    # margin pushed past the border is clamped
    assert expand_and_clamp((2, 3, 52, 53), 0.25, 100, 100) == (0, 0, 65, 66)


def test_expand_and_clamp_rejects_bad_arguments():
    with pytest.raises(ValueError):
        expand_and_clamp((0, 0, 10, 10), -0.1, 100, 100)
    with pytest.raises(ValueError):
        expand_and_clamp((0, 0, 10, 10), 0.1, 0, 100)
    with pytest.raises(ValueError):
        expand_and_clamp((0, 0, float("nan"), 10), 0.1, 100, 100)


def test_expand_and_clamp_returns_python_ints():
    box = expand_and_clamp(np.array([1.5, 2.5, 30.5, 40.5], np.float32), 0.1, 100, 100)
    assert all(type(v) is int for v in box)


@pytest.mark.parametrize("region", [(10, 20, 90, 120), (5, 5, 400, 300), (0, 0, 3, 3)])
def test_crop_face_size_and_dtype(region):
    image = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    crop = crop_face(image, region, 160)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8


def test_crop_face_interpolation_area_when_shrinking_cubic_when_enlarging():
    image = np.random.default_rng(2).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    big, small = (10, 10, 330, 350), (10, 10, 90, 100)
    expected_big = cv2.resize(image[10:350, 10:330], (160, 160), interpolation=cv2.INTER_AREA)
    expected_small = cv2.resize(image[10:100, 10:90], (160, 160), interpolation=cv2.INTER_CUBIC)
    assert np.array_equal(crop_face(image, big, 160), expected_big)
    assert np.array_equal(crop_face(image, small, 160), expected_small)


def test_crop_face_takes_the_box_region():
    image = np.zeros((100, 100, 3), np.uint8)
    image[20:60, 30:70] = (200, 100, 50)
    crop = crop_face(image, (30, 20, 70, 60), 16)
    assert np.all(crop == (200, 100, 50))


# --------------------------------------------------------------------------- downscaling


def test_detection_scale():
    assert detection_scale(300, 237, 640) == 1.0
    assert detection_scale(640, 100, 640) == 1.0
    assert detection_scale(1280, 960, 640) == pytest.approx(0.5)
    assert detection_scale(960, 1280, 640) == pytest.approx(0.5)
    assert detection_scale(4000, 3000, 1000) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        detection_scale(100, 100, 0)


def test_downscale_for_detection_and_map_back():
    image = np.zeros((1000, 1500, 3), np.uint8)
    small, fx, fy = downscale_for_detection(image, 600)
    assert small.shape == (400, 600, 3)
    assert (fx, fy) == pytest.approx((2.5, 2.5))
    same, fx, fy = downscale_for_detection(image[:300, :200], 600)
    assert same.shape == (300, 200, 3) and (fx, fy) == (1.0, 1.0)
    mapped = map_to_original(
        {"box": [100, 50, 200, 150], "confidence": np.float32(0.97), "keypoints": {"nose": (150, 100)}},
        2.5, 2.5, 1500, 1000,
    )
    assert mapped["box"] == (250, 125, 500, 375)
    assert mapped["keypoints"]["nose"] == pytest.approx((375.0, 250.0))
    assert type(mapped["confidence"]) is float
    # a box reaching past the image after mapping is clamped
    assert map_to_original({"box": [500, 300, 599, 399], "confidence": 0.9}, 2.6, 2.6, 1500, 1000)["box"] == (
        1300, 780, 1500, 1000)


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@needs_data
def test_upscaled_photo_box_maps_back_to_original_pixels(detector):
    image = load(ONE_FACE[3])  # 305x236: 915x708 when upscaled, detected at 640x495
    height, width = image.shape[:2]
    big = cv2.resize(image, (width * 3, height * 3), interpolation=cv2.INTER_CUBIC)
    assert max(big.shape[:2]) > CONFIG.detect_max_side  # so it is really downscaled for detection
    (small_face,) = detector.detect_all(image)
    (big_face,) = detector.detect_all(big)
    expected = [3 * v for v in small_face["box"]]
    size = max(expected[2] - expected[0], expected[3] - expected[1])
    assert np.abs(np.array(big_face["box"]) - expected).max() <= 0.15 * size
    assert iou(big_face["box"], expected) > 0.75
    x0, y0, x1, y1 = big_face["box"]
    assert 0 <= x0 < x1 <= big.shape[1] and 0 <= y0 < y1 <= big.shape[0]
    # keypoints come back in original pixels too: the nose lies inside the face box
    nx, ny = big_face["keypoints"]["nose"]
    assert x0 <= nx <= x1 and y0 <= ny <= y1


# --------------------------------------------------------------------------- FaceDetector on batches


@needs_data
def test_batch_of_real_photos(detector):
    images = [load(p) for p in ONE_FACE]
    batch = make_batch(images)
    out = detector(batch)

    assert "image" not in out
    assert set(out) == set(batch) - {"image"} | {"face", "box", "confidence", "faces_found"}
    for name in ("path", "sha256", "split", "label", "label_id"):
        assert np.array_equal(out[name], batch[name]), name
    assert out["box"].dtype == np.int32 and out["box"].shape == (len(images), 4)
    assert out["confidence"].dtype == np.float32
    assert out["faces_found"].dtype == np.int32
    assert out["face"].dtype == object and out["face"].shape == (len(images),)
    for i, image in enumerate(images):
        assert out["reason"][i] == "" and out["detail"][i] == "", (ONE_FACE[i], out["detail"][i])
        assert out["faces_found"][i] == 1
        assert out["confidence"][i] >= CONFIG.min_face_confidence
        x0, y0, x1, y1 = out["box"][i]
        height, width = image.shape[:2]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        # a face is at least a few percent of these portrait photos
        assert (x1 - x0) * (y1 - y0) > 0.02 * width * height
        assert out["face"][i].shape == (160, 160, 3) and out["face"][i].dtype == np.uint8


@needs_data
def test_rejected_noise_and_blank_rows(detector):
    photo = load(ONE_FACE[0])
    noise = np.random.default_rng(0).integers(0, 256, (240, 200, 3), dtype=np.uint8)
    blank = np.full((200, 200, 3), 128, np.uint8)
    batch = make_batch(
        [photo, EMPTY, noise, blank],
        reasons=["", "truncated", "", ""],
        details=["", "image data ends after 1234 bytes", "", ""],
    )
    out = detector(batch)

    assert list(out["reason"]) == ["", "truncated", "no_face", "no_face"]
    assert out["detail"][1] == "image data ends after 1234 bytes"  # untouched
    for i in (2, 3):
        assert re.fullmatch(r"MTCNN found no face with confidence >= 0\.9 \((best 0\.\d\d|no candidate)\)",
                            out["detail"][i]), out["detail"][i]
    for i in (1, 2, 3):
        assert out["face"][i].shape == (0, 0, 3)
        assert out["box"][i].tolist() == [0, 0, 0, 0]
        assert out["confidence"][i] == 0 and out["faces_found"][i] == 0
    assert out["faces_found"][0] == 1 and out["face"][0].shape == (160, 160, 3)
    for name in ("path", "sha256", "split", "label", "label_id"):
        assert np.array_equal(out[name], batch[name]), name


@needs_data
def test_an_image_without_detections_does_not_shift_other_boxes(detector):
    # mtcnn 1.0.0 applies the padding offsets of the wrong image once an earlier image in the list
    # has no detection; the small blank image is sorted first, so this catches a regression.
    photo = load(ONE_FACE[0])
    (alone,) = detector.detect_all(photo)
    out = detector(make_batch([photo, np.full((40, 40, 3), 255, np.uint8), np.zeros((60, 50, 3), np.uint8)]))
    assert list(out["reason"]) == ["", "no_face", "no_face"]
    assert iou(tuple(out["box"][0]), alone["box"]) > 0.8, (out["box"][0], alone["box"])


@needs_data
def test_weak_face_reports_best_confidence(detector):
    out = detector(make_batch([load(WEAK_FACE)]))
    assert out["reason"][0] == "no_face"
    best = float(re.search(r"\(best (0\.\d\d)\)", out["detail"][0]).group(1))
    assert 0.5 < best < 0.9


def test_unsupported_arrays_do_not_break_the_batch(detector):
    gray = np.zeros((100, 100), np.uint8)
    floats = np.zeros((100, 100, 3), np.float32)
    rgba = np.zeros((100, 100, 4), np.uint8)
    out = detector(make_batch([gray, floats, rgba, EMPTY]))
    assert list(out["reason"]) == ["unsupported"] * 4
    assert "HxWx3" in out["detail"][0] and "uint8" in out["detail"][1] and "(100, 100, 4)" in out["detail"][2]
    assert "empty image" in out["detail"][3]
    assert all(f.shape == (0, 0, 3) for f in out["face"])


def test_tiny_image_is_no_face_not_an_error(detector):
    out = detector(make_batch([np.full((12, 12, 3), 200, np.uint8), np.zeros((1, 1, 3), np.uint8)]))
    assert list(out["reason"]) == ["no_face", "no_face"]


def test_empty_batch(detector):
    out = detector(make_batch([]))
    assert out["face"].shape == (0,) and out["box"].shape == (0, 4) and out["box"].dtype == np.int32
    assert out["confidence"].shape == (0,) and out["faces_found"].shape == (0,)
    assert len(out["reason"]) == 0 and len(out["path"]) == 0


def test_all_rows_already_rejected(detector):
    batch = make_batch([EMPTY, EMPTY], reasons=["not_an_image", "empty_file"], details=["a text file", "0 bytes"])
    out = detector(batch)
    assert list(out["reason"]) == ["not_an_image", "empty_file"]
    assert list(out["detail"]) == ["a text file", "0 bytes"]


def test_programming_errors_are_not_swallowed(detector):
    batch = make_batch([np.zeros((50, 50, 3), np.uint8)])
    del batch["reason"]
    with pytest.raises(KeyError):
        detector(batch)


@needs_data
def test_detect_all_returns_every_confident_face(detector):
    image = load(TWO_FACES)
    faces = detector.detect_all(image)
    assert len(faces) == 2
    assert faces[0]["confidence"] >= faces[1]["confidence"] >= CONFIG.min_face_confidence
    height, width = image.shape[:2]
    for f in faces:
        x0, y0, x1, y1 = f["box"]
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert f["face"].shape == (160, 160, 3) and f["face"].dtype == np.uint8
        assert set(f["keypoints"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert iou(faces[0]["box"], faces[1]["box"]) == 0  # two different people

    # the batch path keeps the one select_face picks and counts both
    out = detector(make_batch([image]))
    assert out["faces_found"][0] == 2
    chosen = faces[select_face(faces, CONFIG.min_face_confidence)]
    assert tuple(out["box"][0]) == chosen["box"]
    assert np.array_equal(out["face"][0], chosen["face"])


def test_detect_all_on_a_bad_array_raises(detector):
    with pytest.raises(Exception, match="HxWx3"):
        detector.detect_all(np.zeros((10, 10), np.uint8))
