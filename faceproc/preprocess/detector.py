"""Face detection with MTCNN: find, choose, crop.

`FaceDetector` is built once per actor by the Ray Data callable classes that use it (preprocessing's
`FacePipeline`, identify's `IdentifyPipeline`) and by `predict`; it runs MTCNN on a batch of photos
in one call, with MTCNN's three networks as tf.function graphs (run eagerly, Python's per-op
dispatch cost more than the convolutions on small photos). Photos are downscaled to
`detect_max_side` first, because mtcnn 1.0 zero-pads every image of a batch to the largest one;
boxes are mapped back to the original pixels.

The box and crop maths live in `geometry` (box convention there). The `box` a row reports is the
face MTCNN found (clamped to the image); the crop adds `face_margin` around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from faceproc.config import PreprocessConfig
from faceproc.core.errors import describe
from faceproc.core.images import object_array
from faceproc.core.schema import RejectReason
from faceproc.preprocess.geometry import downscale_for_detection, face_crop, map_to_original, select_face

# MTCNN stage thresholds, pinned explicitly (mtcnn 1.0's defaults) so a library default change
# cannot silently change which faces are found. ONet keeps candidates down to CANDIDATE_THRESHOLD:
# confident faces are chosen with `min_face_confidence` afterwards, and the weaker candidates only
# serve to say "best 0.41" in the no_face detail. (ONet's NMS ranks by score, so low-scoring
# candidates can never suppress a confident face: the confident set does not depend on this.)
THRESHOLD_PNET = 0.6
THRESHOLD_RNET = 0.7
CANDIDATE_THRESHOLD = 0.0
# A photo without a confident face is detected once more, alone, with R-Net's gate lowered to this:
# R-Net only prunes candidates before O-Net scores them, and its score for one face swings with the
# pixel grid of MTCNN's pyramid (a clear 220x165 train photo: R-Net below 0.7 at its own size, O-Net
# 1.00 once past it; found or lost with the batch's padding). O-Net's `min_face_confidence` still
# decides; a photo that has a confident face keeps the first pass, so no false positive is added there.
RETRY_THRESHOLD_RNET = 0.5

# mtcnn 1.0.0 bug: fix_bboxes_offsets() pairs the ids of the images that HAVE detections with the
# per-image padding by position, so one image without any detection shifts the boxes of every
# later image in the list by another image's padding. Padding only at the bottom/right
# ("topleft") makes every offset zero, so that step cannot do harm.
BATCH_JUSTIFICATION = "topleft"

EMPTY_FACE = np.zeros((0, 0, 3), np.uint8)

# mtcnn 1.0 runs its three networks eagerly, Keras layer by layer, so Python dispatch costs as much as
# the convolutions. Each stage's network as a tf.function with a fixed input signature is traced once
# (P-Net is fully convolutional: one trace for every pyramid scale) and runs as one graph, with the
# same boxes and scores, for two thirds of the CPU per photo (docs/benchmarks.md, "Preprocessing").
# The stages keep their network in `_model`; a stage not named here stays eager.
NETWORK_INPUTS = {"StagePNet": (None, None, None, 3), "StageRNet": (None, 24, 24, 3), "StageONet": (None, 48, 48, 3)}


class TensorBatchStage:
    """An mtcnn stage handed the batch as one tf.Tensor. mtcnn 1.0 passes each stage the padded batch
    as a numpy array, which TensorFlow copies into a new tensor for every pyramid scale and every crop:
    about a tenth of detection's CPU (docs/benchmarks.md, "Preprocessing"). Same values, same faces."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, images_normalized: Any, **kwargs: Any) -> Any:
        import tensorflow as tf

        return self.inner(images_normalized=tf.convert_to_tensor(images_normalized), **kwargs)


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


def limit_tf_threads(threads: int) -> None:
    """Both TensorFlow thread pools of a detection actor set to `threads` (0: TensorFlow's default):
    one actor per core beats actors fighting over threads. Before TensorFlow runs anything."""
    if threads > 0:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


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
        for stage in self._mtcnn.stages:
            shape = NETWORK_INPUTS.get(type(stage).__name__)
            if shape is not None:
                stage._model = tf.function(stage.model, input_signature=[tf.TensorSpec(shape, tf.float32)])
        self._mtcnn.stages[:] = [TensorBatchStage(stage) for stage in self._mtcnn.stages]  # the list MTCNN runs
        # What MTCNN may raise on a bad image; anything else is a bug and propagates.
        self._image_errors: tuple[type[BaseException], ...] = (
            ImageError, ValueError, IndexError, cv2.error, tf.errors.OpError,
        )

    # ---- detection core, shared by __call__ and detect_all

    def _mtcnn_call(self, images: list[np.ndarray], threshold_rnet: float = THRESHOLD_RNET
                    ) -> list[list[dict[str, Any]]]:
        results = self._mtcnn.detect_faces(
            list(images),
            box_format="xyxy",
            min_face_size=self.config.min_face_size,
            threshold_pnet=THRESHOLD_PNET,
            threshold_rnet=threshold_rnet,
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
        `detect_batch_size` (one MTCNN call when the batch is that size). An image without a
        confident face is detected once more on its own, with R-Net's gate at RETRY_THRESHOLD_RNET:
        mtcnn 1.0's result for a photo depends on its batch neighbours (it zero-pads the batch to its
        largest photo, which moves the pyramid's pixel grid), and a face must not be found or lost by
        that, nor by which command (`predict` detects one photo at a time) looks at the photo.
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

        def alone(index: int, threshold_rnet: float = THRESHOLD_RNET) -> list[dict[str, Any]] | Exception:
            try:
                return finish(index, self._mtcnn_call([prepared[index][0]], threshold_rnet)[0])
            except self._image_errors as exc:
                return exc

        def second_look(index: int) -> None:
            """A photo without a confident face, detected alone with R-Net's gate at RETRY_THRESHOLD_RNET."""
            if isinstance(results[index], Exception) or self._confident(results[index]):
                return
            retried = alone(index, RETRY_THRESHOLD_RNET)
            if not isinstance(retried, Exception) and self._confident(retried):
                results[index] = retried

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
                    second_look(index)
                continue
            for index, raw in zip(chunk, raw_chunk):
                try:
                    results[index] = finish(index, raw)
                except self._image_errors as exc:
                    results[index] = exc
                second_look(index)
        return results

    def detect_all(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Every confident face of one RGB uint8 image (see `faces_of`). Raises ImageError (or
        MTCNN's error) when the image cannot be processed."""
        (result,) = self.faces_of([image])
        if isinstance(result, Exception):
            raise result
        return result

    def faces_of(self, images: Sequence[np.ndarray]) -> list[list[dict[str, Any]] | Exception]:
        """Every confident face of each image, best first, with its crop (`confident_crops`); or the
        exception that image raised (`predict`)."""
        return [result if isinstance(result, Exception) else self.confident_crops(image, result)
                for image, result in zip(images, self.detect_candidates(images))]

    def confident_crops(self, image: np.ndarray, candidates: list[dict[str, Any]]) -> list[dict[str, Any]] | Exception:
        """The confident faces among `candidates` (`detect_candidates`' for `image`), best first: {"box"
        (int x0, y0, x1, y1 in the image's pixels, clamped), "confidence", "keypoints", "face" (the
        face_size crop the shards hold), "aligned"}; the exception when none of them could be cut."""
        faces, failure = [], None
        for face in self._confident(candidates):
            try:  # one face that cannot be cut does not cost the photo its other faces
                crop, aligned = self._crop(image, face)
            except self._image_errors as exc:
                failure = exc
                continue
            faces.append({**face, "face": crop, "aligned": aligned})
        return failure if failure is not None and not faces else faces

    def no_face_detail(self, candidates: list[dict[str, Any]]) -> str:
        """A no_face reject's detail: the threshold, and the best candidate MTCNN had ("best 0.41")."""
        return _no_face_detail(candidates, self.config.min_face_confidence)

    def _crop(self, image: np.ndarray, face: dict[str, Any]) -> tuple[np.ndarray, bool]:
        config = self.config
        return face_crop(image, face["box"], face.get("keypoints"), config.face_margin, config.face_size, config.align)

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
        aligned = np.zeros(n, bool)
        keypoints: list[dict[str, Any]] = [{} for _ in range(n)]

        todo = [i for i in range(n) if not reasons[i]]
        for i, candidates in zip(todo, self.detect_candidates([images[i] for i in todo])):
            if isinstance(candidates, Exception):
                reasons[i], details[i] = RejectReason.UNSUPPORTED.value, f"face detection failed: {describe(candidates)}"
                continue
            confident = self._confident(candidates)
            found[i] = len(confident)
            chosen = select_face(confident, self.config.min_face_confidence)
            if chosen is None:
                reasons[i], details[i] = RejectReason.NO_FACE.value, self.no_face_detail(candidates)
                continue
            face = confident[chosen]
            try:
                faces[i], aligned[i] = self._crop(images[i], face)
            except self._image_errors as exc:
                reasons[i], details[i] = RejectReason.UNSUPPORTED.value, f"face detection failed: {describe(exc)}"
                found[i] = 0
                continue
            boxes[i] = face["box"]
            confidences[i] = face["confidence"]
            keypoints[i] = face.get("keypoints") or {}

        out = {name: column for name, column in batch.items() if name != "image"}
        out.update(
            face=object_array(faces),
            box=boxes,
            confidence=confidences,
            faces_found=found,
            aligned=aligned,
            keypoints=object_array(keypoints),
            reason=np.array(reasons, dtype=object),
            detail=np.array(details, dtype=object),
        )
        return out
