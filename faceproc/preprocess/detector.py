"""Face detection with MTCNN: find, choose, crop.

`FaceDetector` is a Ray Data callable class (`map_batches(FaceDetector, fn_constructor_args=(config,))`):
it loads MTCNN once per actor and runs it on a whole batch of photos in one call, which is where the
speed is (per-call overhead dominates on small photos). Photos are downscaled to
`detect_max_side` first, because mtcnn 1.0 zero-pads every image of a batch to the largest one;
boxes are mapped back to the original pixels.

Box convention everywhere in this module: (x0, y0, x1, y1) in pixels, x1/y1 exclusive.
The `box` a row reports is the face MTCNN found (clamped to the image); the crop adds
`face_margin` around it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import cv2
import numpy as np

from faceproc.config import PreprocessConfig
from faceproc.core.errors import describe
from faceproc.core.images import object_array
from faceproc.core.schema import RejectReason

# MTCNN stage thresholds, pinned explicitly (mtcnn 1.0's defaults) so a library default change
# cannot silently change which faces are found. ONet keeps candidates down to CANDIDATE_THRESHOLD:
# confident faces are chosen with `min_face_confidence` afterwards, and the weaker candidates only
# serve to say "best 0.41" in the no_face detail. (ONet's NMS ranks by score, so low-scoring
# candidates can never suppress a confident face: the confident set does not depend on this.)
THRESHOLD_PNET = 0.6
THRESHOLD_RNET = 0.7
CANDIDATE_THRESHOLD = 0.0

# mtcnn 1.0.0 bug: fix_bboxes_offsets() pairs the ids of the images that HAVE detections with the
# per-image padding by position, so one image without any detection shifts the boxes of every
# later image in the list by another image's padding. Padding only at the bottom/right
# ("topleft") makes every offset zero, so that step cannot do harm.
BATCH_JUSTIFICATION = "topleft"

EMPTY_FACE = np.zeros((0, 0, 3), np.uint8)


# --------------------------------------------------------------------------- pure helpers


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


def _no_face_detail(candidates: list[dict[str, Any]], min_confidence: float) -> str:
    head = f"MTCNN found no face with confidence >= {min_confidence:g}"
    if not candidates:
        return f"{head} (no candidate)"
    best = max(face["confidence"] for face in candidates)
    return f"{head} (best {best:.2f})"


class ImageError(Exception):
    """An input image this module cannot process (wrong shape or dtype, or MTCNN failed on it)."""


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an HxWx3 RGB array, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"empty image of shape {image.shape}")
    return image


# --------------------------------------------------------------------------- the detector


class FaceDetector:
    """MTCNN over Ray Data batches; also `detect_all` for one image (the `predict` command).

    Per-image problems (an array that is not HxWx3 uint8, MTCNN failing on one photo) become
    reason "unsupported" on that row; a batch is never lost because of one photo.
    """

    def __init__(self, config: PreprocessConfig) -> None:
        import tensorflow as tf
        from mtcnn import MTCNN

        self.config = config
        self._mtcnn = MTCNN(stages="face_and_landmarks_detection", device="CPU:0")
        # What MTCNN may raise on a bad image; anything else is a bug and propagates.
        self._image_errors: tuple[type[BaseException], ...] = (
            ImageError, ValueError, IndexError, cv2.error, tf.errors.OpError,
        )

    # ---- detection core, shared by __call__ and detect_all

    def _mtcnn_call(self, images: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        results = self._mtcnn.detect_faces(
            list(images),
            box_format="xyxy",
            min_face_size=self.config.min_face_size,
            threshold_pnet=THRESHOLD_PNET,
            threshold_rnet=THRESHOLD_RNET,
            threshold_onet=CANDIDATE_THRESHOLD,
            batch_stack_justification=BATCH_JUSTIFICATION,
        )
        if len(results) != len(images):  # mtcnn returns one list per image; guard against surprises
            raise RuntimeError(f"MTCNN returned {len(results)} results for {len(images)} images")
        return results

    def _confident(self, candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [face for face in candidates if face["confidence"] >= self.config.min_face_confidence]

    def detect_candidates(self, images: Sequence[np.ndarray]) -> list[list[dict[str, Any]] | Exception]:
        """Every MTCNN candidate for each image, in original pixels, highest confidence first.

        One item per image: a list of {"box", "confidence", "keypoints"} (possibly empty), or the
        exception that image raised. Images are downscaled, sorted by size and detected in chunks of
        `detect_batch_size` (one MTCNN call when the batch is that size). An image whose chunk
        yielded no confident face is detected once more on its own: mtcnn 1.0's batched result for
        a photo depends slightly on its batch neighbours (zero padding, the order of tied scores in
        its NMS), and a face the photo alone shows must not be lost to that.
        """
        results: list[list[dict[str, Any]] | Exception] = [[] for _ in images]
        prepared: dict[int, tuple[np.ndarray, float, float]] = {}
        for index, image in enumerate(images):
            try:
                prepared[index] = downscale_for_detection(_check_image(image), self.config.detect_max_side)
            except self._image_errors as exc:
                results[index] = exc

        def finish(index: int, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
            _, fx, fy = prepared[index]
            height, width = images[index].shape[:2]
            faces = [map_to_original(face, fx, fy, width, height) for face in raw]
            return sorted(faces, key=lambda face: -face["confidence"])

        def alone(index: int) -> list[dict[str, Any]] | Exception:
            try:
                return finish(index, self._mtcnn_call([prepared[index][0]])[0])
            except self._image_errors as exc:
                return exc

        order = sorted(prepared, key=lambda i: (prepared[i][0].shape[0] * prepared[i][0].shape[1], i))
        chunk_size = max(1, self.config.detect_batch_size)
        for start in range(0, len(order), chunk_size):
            chunk = order[start : start + chunk_size]
            try:
                raw_chunk = self._mtcnn_call([prepared[i][0] for i in chunk])
            except self._image_errors as exc:
                if len(chunk) == 1:
                    results[chunk[0]] = exc
                    continue
                for index in chunk:  # find the photo that broke the call; the others still get faces
                    results[index] = alone(index)
                continue
            for index, raw in zip(chunk, raw_chunk):
                try:
                    results[index] = finish(index, raw)
                except self._image_errors as exc:
                    results[index] = exc
                if len(chunk) > 1 and not isinstance(results[index], Exception) and not self._confident(results[index]):
                    retried = alone(index)
                    if not isinstance(retried, Exception) and self._confident(retried):
                        results[index] = retried
        return results

    def detect_all(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Every confident face of one RGB uint8 image, best first: {"box" (int x0, y0, x1, y1 in the
        image's pixels, clamped), "confidence", "keypoints", "face" (face_size crop with margin)}.
        Raises ImageError (or MTCNN's error) when the image cannot be processed."""
        (result,) = self.detect_candidates([image])
        if isinstance(result, Exception):
            raise result
        return [{**face, "face": self._crop(image, face["box"])} for face in self._confident(result)]

    def _crop(self, image: np.ndarray, box: Sequence[int]) -> np.ndarray:
        height, width = image.shape[:2]
        return crop_face(image, expand_and_clamp(box, self.config.face_margin, width, height), self.config.face_size)

    # ---- Ray Data entry point

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = batch["image"]
        reasons = ["" if r is None else str(r) for r in batch["reason"]]
        details = ["" if d is None else str(d) for d in batch["detail"]]
        n = len(reasons)
        faces: list[np.ndarray] = [EMPTY_FACE] * n
        boxes = np.zeros((n, 4), np.int32)
        confidences = np.zeros(n, np.float32)
        found = np.zeros(n, np.int32)

        todo = [i for i in range(n) if not reasons[i]]
        for i, candidates in zip(todo, self.detect_candidates([images[i] for i in todo])):
            if isinstance(candidates, Exception):
                reasons[i], details[i] = RejectReason.UNSUPPORTED.value, f"face detection failed: {describe(candidates)}"
                continue
            confident = self._confident(candidates)
            found[i] = len(confident)
            chosen = select_face(confident, self.config.min_face_confidence)
            if chosen is None:
                reasons[i] = RejectReason.NO_FACE.value
                details[i] = _no_face_detail(candidates, self.config.min_face_confidence)
                continue
            face = confident[chosen]
            try:
                faces[i] = self._crop(images[i], face["box"])
            except self._image_errors as exc:
                reasons[i], details[i] = RejectReason.UNSUPPORTED.value, f"face detection failed: {describe(exc)}"
                found[i] = 0
                continue
            boxes[i] = face["box"]
            confidences[i] = face["confidence"]

        out = {name: column for name, column in batch.items() if name != "image"}
        out.update(
            face=object_array(faces),
            box=boxes,
            confidence=confidences,
            faces_found=found,
            reason=np.array(reasons, dtype=object),
            detail=np.array(details, dtype=object),
        )
        return out
