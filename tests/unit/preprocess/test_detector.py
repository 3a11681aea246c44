"""faceproc.preprocess.detector: FaceDetector with the real MTCNN on real photos."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from PIL import Image

from faceproc.config import PreprocessConfig
from faceproc.preprocess.detector import FaceDetector, TensorBatchStage
from faceproc.preprocess.geometry import alignment_template, crop_face, expand_and_clamp, select_face
from tests.conftest import DATASET

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
# A clear face (O-Net 1.00) that R-Net rates below its 0.7 gate at the photo's own size (220x165) but
# above it at most other paddings: before the retry it was found or lost with the batch's neighbours.
BORDERLINE = "train/elton_john/httpsuploadwikimediaorgwikipediacommonsthumbEltonJohninsjpgpxEltonJohninsjpg.jpg"
# A face MTCNN rates about 0.84: below the 0.9 threshold.
WEAK_FACE = "val/elton_john/httpafilesbiographycomimageuploadcfillcssrgbdprgfacehqwMTEODAOTcxNjcMjczMjkzjpg.jpg"

CONFIG = PreprocessConfig(min_face_confidence=0.9, face_margin=0.1, face_size=160, detect_max_side=640,
                          detect_batch_size=8)
EMPTY = np.zeros((0, 0, 3), np.uint8)

needs_data = pytest.mark.skipif(not DATASET.is_dir(), reason="dataset not fetched (run `faceproc fetch-data`)")


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def load(relative: str) -> np.ndarray:
    with Image.open(DATASET / relative) as im:
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
    assert set(out) == set(batch) - {"image"} | {"face", "box", "confidence", "faces_found", "aligned", "keypoints"}
    assert all(len(points) == 5 for points in out["keypoints"])
    assert out["aligned"].dtype == bool and out["aligned"].all()  # five clear keypoints on each
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
def test_a_face_is_found_alone_and_beside_any_neighbours(detector):
    photo = load(BORDERLINE)
    assert not detector._confident(detector._mtcnn_call([photo])[0])  # the first pass alone misses it
    (alone,) = detector.detect_all(photo)  # as `predict` sees it: one photo
    assert alone["confidence"] > 0.99
    for neighbours in ([], [load(ONE_FACE[0])], [np.zeros((200, 300, 3), np.uint8)], [load(ONE_FACE[2])] * 3):
        out = detector(make_batch([photo, *neighbours]))
        assert out["reason"][0] == "", (len(neighbours), out["detail"][0])
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


@needs_data
def test_mtcnn_runs_graphs_on_tensors_with_the_results_of_mtcnn_as_shipped(detector):
    """Each stage gets the batch as one tensor and its network is a tf.function (traced once: P-Net
    takes every pyramid scale); the candidates are those of mtcnn's own numpy hand-over and eager
    networks on the same photos, in one batch."""
    import tensorflow as tf

    stages = detector._mtcnn.stages
    assert [type(stage) for stage in stages] == [TensorBatchStage] * 3
    networks = [stage.inner.model for stage in stages]
    assert [isinstance(network, tf.types.experimental.PolymorphicFunction) for network in networks] == [True] * 3
    images = [load(p) for p in [*ONE_FACE, TWO_FACES, WEAK_FACE]]
    graph = detector.detect_candidates(images)
    assert [network.experimental_get_tracing_count() for network in networks] == [1, 1, 1]

    shipped = FaceDetector(CONFIG)
    shipped._mtcnn.stages[:] = [stage.inner for stage in shipped._mtcnn.stages]
    for stage in shipped._mtcnn.stages:
        stage._model = stage.model.python_function
    expected = shipped.detect_candidates(images)
    assert [len(faces) for faces in graph] == [len(faces) for faces in expected]
    for got, want in zip(graph, expected):
        for a, b in zip(got, want):
            assert np.allclose(a["box"], b["box"], atol=1) and abs(a["confidence"] - b["confidence"]) < 1e-4


def test_detect_all_on_a_bad_array_raises(detector):
    with pytest.raises(Exception, match="HxWx3"):
        detector.detect_all(np.zeros((10, 10), np.uint8))


@needs_data
def test_aligned_crop_of_a_tilted_real_photo_has_level_eyes_on_their_own_sides(detector):
    """The photo turned by 20 degrees: the aligned crop puts the eyes level, where the template has
    them and on the sides they are on in the photo (no mirroring); the margin crop stays tilted."""
    photo = load(ONE_FACE[0])
    height, width = photo.shape[:2]
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), 20.0, 1.0)
    tilted = cv2.warpAffine(photo, turn, (width, height), borderMode=cv2.BORDER_REFLECT_101)
    (face,) = [f for f in detector.detect_all(tilted) if f["confidence"] > 0.99][:1]
    assert face["aligned"]
    assert face["keypoints"]["left_eye"][0] < face["keypoints"]["right_eye"][0]  # mtcnn: viewer's left first

    def eyes_in(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (found,) = detector.detect_candidates([crop])
        best = max(found, key=lambda f: f["confidence"])
        return np.array(best["keypoints"]["left_eye"]), np.array(best["keypoints"]["right_eye"])

    left, right = eyes_in(face["face"])
    assert abs(left[1] - right[1]) < 4  # level, in pixels of the 160 px crop
    assert left[0] < right[0]
    template = alignment_template(CONFIG.face_size, CONFIG.face_margin)
    assert np.linalg.norm(left - template[0]) < 16 and np.linalg.norm(right - template[1]) < 16  # a 10th of the side

    margin_crop = crop_face(tilted, expand_and_clamp(face["box"], CONFIG.face_margin, width, height), 160)
    left, right = eyes_in(margin_crop)
    assert abs(left[1] - right[1]) > 12  # what alignment undid
