"""Pure detection geometry: which face to keep, boxes grown, clamped and scaled, crops resized, and
faces aligned to a five-point template.

No detector and no TensorFlow here, so it is tested with plain arrays. Box convention: (x0, y0,
x1, y1) in pixels, x1/y1 exclusive. A negative corner is clamped to 0, never mirrored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from faceproc.core.schema import KEYPOINT_NAMES


def select_face(faces: Sequence[dict[str, Any]], min_confidence: float) -> int | None:
    """Index of the face to keep: among faces with confidence >= `min_confidence`, the one with
    the largest confidence * box area (box as x0, y0, x1, y1). None when no face qualifies.
    Ties go to the earlier face.
    """
    best_index, best_score = None, -1.0
    for index, face in enumerate(faces):
        confidence = float(face["confidence"])
        if confidence < min_confidence:
            continue
        x0, y0, x1, y1 = (float(v) for v in face["box"])
        score = confidence * max(0.0, x1 - x0) * max(0.0, y1 - y0)
        if score > best_score:
            best_index, best_score = index, score
    return best_index


def expand_and_clamp(box_xyxy: Sequence[float], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow `box_xyxy` by `margin` (a fraction of the box width/height) on each side, then clamp it
    to a `width` x `height` image. Negative corners are clamped to 0, never mirrored.

    Returns int (x0, y0, x1, y1) with 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height: a box
    that ends up outside the image or degenerate still covers at least one pixel at the nearest edge.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError(f"box has non-finite coordinates: {tuple(box_xyxy)}")
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    left, right = _clamp_span(x0 - dx, x1 + dx, width)
    top, bottom = _clamp_span(y0 - dy, y1 + dy, height)
    return left, top, right, bottom


def _clamp_span(lo: float, hi: float, limit: int) -> tuple[int, int]:
    """[floor(lo), ceil(hi)) clamped to [0, limit], at least one pixel wide."""
    start = min(max(math.floor(lo), 0), limit - 1)
    end = max(min(math.ceil(hi), limit), start + 1)
    return start, end


def crop_face(image: np.ndarray, box_xyxy: Sequence[float], size: int) -> np.ndarray:
    """The `box_xyxy` region of `image` (clamped to it) resized to a `size` x `size` x 3 uint8 array.

    cv2.INTER_AREA when the region is at least `size` on both sides (shrinking), else INTER_CUBIC.
    """
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    height, width = image.shape[:2]
    x0, y0, x1, y1 = expand_and_clamp(box_xyxy, 0.0, width, height)
    region = image[y0:y1, x0:x1]
    shrinking = region.shape[0] >= size and region.shape[1] >= size
    resized = cv2.resize(region, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return np.ascontiguousarray(resized, dtype=np.uint8)


def detection_scale(height: int, width: int, max_side: int) -> float:
    """Factor (<= 1) that brings the longest side of a `height` x `width` image down to `max_side`."""
    if max_side < 1:
        raise ValueError(f"detect_max_side must be positive, got {max_side}")
    longest = max(height, width)
    return 1.0 if longest <= max_side else max_side / longest


def downscale_for_detection(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
    """`image` resized so its longest side is at most `max_side`, and the factors (fx, fy) that map
    detection pixels back to original pixels (x_original = x_detection * fx)."""
    height, width = image.shape[:2]
    scale = detection_scale(height, width, max_side)
    if scale >= 1.0:
        return image, 1.0, 1.0
    small_w, small_h = max(1, round(width * scale)), max(1, round(height * scale))
    small = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
    return small, width / small_w, height / small_h


def map_to_original(face: dict[str, Any], fx: float, fy: float, width: int, height: int) -> dict[str, Any]:
    """One MTCNN result (box in xyxy detection pixels) in original pixels: an int box clamped to the
    `width` x `height` image, a float confidence and the keypoints scaled by (fx, fy)."""
    x0, y0, x1, y1 = (float(v) for v in face["box"])
    box = expand_and_clamp((x0 * fx, y0 * fy, x1 * fx, y1 * fy), 0.0, width, height)
    keypoints = {name: (float(x) * fx, float(y) * fy) for name, (x, y) in face.get("keypoints", {}).items()}
    return {"box": box, "confidence": float(face["confidence"]), "keypoints": keypoints}


# ------------------------------------------------------------------------------------------ alignment

# Where the five keypoints land in an aligned crop, as fractions of its side (x, y). This is the mean
# layout of MTCNN's keypoints in faceproc's margin crops (face_margin 0.1) of the 90 training faces
# that no image border clamped, made left-right symmetric: aligned crops are framed like the margin
# crops the models knew, with every face in one canonical pose. mtcnn 1.0 names the eyes from the
# viewer's side (`left_eye` has the smaller x in all 90), as the template does.
ALIGN_TEMPLATE = np.array(
    [[0.3164, 0.4050], [0.6836, 0.4050], [0.5000, 0.5750], [0.3353, 0.7035], [0.6647, 0.7035]]
)
TEMPLATE_MARGIN = 0.1  # the face_margin ALIGN_TEMPLATE was measured at
MIN_EYE_DISTANCE = 4.0  # pixels in the source photo; closer eyes give no usable rotation
MAX_RESIDUAL = 0.15  # mean keypoint misfit after the transform, as a fraction of the crop side (real
# faces here reach 0.11 when turned)
# The transform's scale against the scale the eyes alone ask for: 0.42-0.97 on the 124 faces here
# (a turned head narrows the eyes); one keypoint far off its place drags it below 0.35.
SCALE_AGREEMENT = (0.35, 1.5)


def alignment_template(size: int, margin: float) -> np.ndarray:
    """The (5, 2) template in pixels of a `size` crop; a larger `margin` shrinks the face about the
    centre, as it widens the margin crop (a face of side 1 in a crop of side 1 + 2 * margin)."""
    scale = (1.0 + 2.0 * TEMPLATE_MARGIN) / (1.0 + 2.0 * margin)
    return ((ALIGN_TEMPLATE - 0.5) * scale + 0.5) * size


def alignment_matrix(keypoints: Mapping[str, Sequence[float]], size: int, margin: float) -> np.ndarray | None:
    """The 2x3 least-squares similarity transform (rotation, uniform scale, translation) taking the
    five keypoints onto the template, or None when they cannot give one: a point missing or not
    finite, eyes closer than MIN_EYE_DISTANCE or in the wrong order, an estimate that fails, or points
    that fit no face layout (a large misfit, or a scale the eyes disagree with), so the caller keeps
    the margin crop."""
    try:
        points = np.array([[float(v) for v in keypoints[name]] for name in KEYPOINT_NAMES], np.float64)
    except (KeyError, TypeError, ValueError):
        return None
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        return None
    eyes = points[1] - points[0]
    if eyes[0] <= 0 or float(np.hypot(*eyes)) < MIN_EYE_DISTANCE:
        return None
    template = alignment_template(size, margin)
    transform = SimilarityTransform.from_estimate(points, template)
    if not transform or not np.all(np.isfinite(transform.params)):
        return None
    residual = np.linalg.norm(transform(points) - template, axis=1).mean()
    eyes_scale = float(np.hypot(*(template[1] - template[0]))) / float(np.hypot(*eyes))
    if residual > MAX_RESIDUAL * size or not SCALE_AGREEMENT[0] <= transform.scale / eyes_scale <= SCALE_AGREEMENT[1]:
        return None
    return transform.params[:2].copy()


def warp_face(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The `size` x `size` crop `matrix` maps `image` onto; outside the photo the border is mirrored.
    warpAffine only interpolates linearly, so a photo shrunk by more than half is first reduced with
    INTER_AREA (as `crop_face` does), which keeps fine detail from aliasing."""
    scale = math.sqrt(abs(float(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        factor = 2.0 * scale
        image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        matrix = matrix.copy()
        matrix[:, :2] /= factor
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def face_crop(image: np.ndarray, box: Sequence[float], keypoints: Mapping[str, Sequence[float]] | None,
              margin: float, size: int, align: bool) -> tuple[np.ndarray, bool]:
    """The face crop every stage uses (training shards, predict, identify) and whether it is aligned:
    with `align`, the keypoints warped onto the template; otherwise, or when they give no transform,
    the box grown by `margin`, clamped and resized."""
    if align and keypoints:
        matrix = alignment_matrix(keypoints, size, margin)
        if matrix is not None:
            return warp_face(image, matrix, size), True
    height, width = image.shape[:2]
    return crop_face(image, expand_and_clamp(box, margin, width, height), size), False
