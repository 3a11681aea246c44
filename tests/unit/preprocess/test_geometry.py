"""faceproc.preprocess.geometry: face choice, box growing and clamping, crops, detection scaling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceproc.preprocess.geometry import (
    KEYPOINT_NAMES,
    alignment_matrix,
    alignment_template,
    crop_face,
    detection_scale,
    downscale_for_detection,
    expand_and_clamp,
    face_crop,
    map_to_original,
    select_face,
)

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


# --------------------------------------------------------------------------- alignment


def _keypoints(points: np.ndarray) -> dict[str, tuple[float, float]]:
    return {name: (float(x), float(y)) for name, (x, y) in zip(KEYPOINT_NAMES, points)}


def _similarity(points: np.ndarray, angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rotation = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return points @ rotation.T + np.array(shift)


@pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (17.0, 2.5), (-30.0, 0.6)])
def test_alignment_undoes_a_known_rotation_and_scale(angle, scale):
    template = alignment_template(160, 0.1)
    photo_points = _similarity(template, angle, scale, (300.0, 120.0))  # the face as a photo shows it
    matrix = alignment_matrix(_keypoints(photo_points), 160, 0.1)
    assert matrix is not None
    mapped = photo_points @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, template, atol=1e-6)
    assert np.hypot(*matrix[:, 0]) == pytest.approx(1.0 / scale)  # the inverse scale
    assert np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])) == pytest.approx(-angle)  # the inverse rotation


def test_warp_puts_marked_keypoints_on_the_template():
    template = alignment_template(160, 0.1)
    photo_points = _similarity(template, 25.0, 1.8, (40.0, 10.0))
    image = np.zeros((480, 480, 3), np.uint8)
    for x, y in photo_points:
        cv2.circle(image, (round(x), round(y)), 6, (255, 255, 255), -1)
    crop, aligned = face_crop(image, (0, 0, 480, 480), _keypoints(photo_points), 0.1, 160, align=True)
    assert aligned and crop.shape == (160, 160, 3)
    for x, y in template:  # a bright dot where each keypoint should land
        assert crop[round(y), round(x)].min() > 200


def test_a_wider_margin_shrinks_the_face_in_the_crop():
    def eye_distance(margin: float) -> float:
        left, right = alignment_template(160, margin)[:2]
        return float(right[0] - left[0])

    assert eye_distance(0.4) < eye_distance(0.1) < eye_distance(0.0)


@pytest.mark.parametrize("broken", [
    lambda k: {n: v for n, v in k.items() if n != "nose"},  # a point missing
    lambda k: {**k, "left_eye": (float("nan"), 50.0)},  # not finite
    lambda k: {**k, "left_eye": k["right_eye"], "right_eye": k["left_eye"]},  # eyes swapped (a mirror)
    lambda k: {**k, "right_eye": (k["left_eye"][0] + 1.0, k["left_eye"][1])},  # eyes one pixel apart
    lambda k: {**k, "mouth_left": (k["mouth_left"][0] - 300.0, k["mouth_left"][1] + 400.0)},  # no face layout
    lambda k: {**k, "mouth_left": (k["mouth_left"][0], k["mouth_left"][1] + 120.0)},  # a mouth corner astray
])
def test_degenerate_keypoints_fall_back_to_the_margin_crop(broken):
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    keypoints = broken(_keypoints(_similarity(alignment_template(160, 0.1), 5.0, 0.8, (60.0, 30.0))))
    box = (60, 30, 190, 180)
    assert alignment_matrix(keypoints, 160, 0.1) is None
    crop, aligned = face_crop(image, box, keypoints, 0.1, 160, align=True)
    assert not aligned
    np.testing.assert_array_equal(crop, crop_face(image, expand_and_clamp(box, 0.1, 320, 240), 160))


def test_alignment_off_is_the_margin_crop():
    image = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    keypoints = _keypoints(_similarity(alignment_template(160, 0.1), 5.0, 0.8, (60.0, 30.0)))
    crop, aligned = face_crop(image, (60, 30, 190, 180), keypoints, 0.1, 160, align=False)
    assert not aligned
    np.testing.assert_array_equal(crop, crop_face(image, expand_and_clamp((60, 30, 190, 180), 0.1, 320, 240), 160))
