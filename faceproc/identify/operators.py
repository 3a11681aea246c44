"""The per-batch step of the identify dataset: read, decode, detect every face, crop, classify.

`IdentifyPipeline` is a Ray Data callable class: MTCNN and the trained model are loaded once per actor,
and each call takes a batch of file rows and returns one identity row per face. Decoding and its
reject reasons are preprocessing's (`decode_batch`, `FaceDetector.no_face_detail`, `RejectRows`), the
crop is training's (`FaceDetector.confident_crops` cuts it with `geometry.face_crop`), and the verdict,
open-set check included, is `predict`'s (`TrainedModel.classify`). A photo with no face or that
cannot be read becomes a staged reject.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from faceproc.config import PreprocessConfig
from faceproc.core.errors import describe
from faceproc.core.images import encode_png
from faceproc.core.rejects import RejectRows
from faceproc.core.schema import IDENTITY_SCHEMA, KEYPOINT_NAMES, RejectReason
from faceproc.identify.rows import embedding_columns
from faceproc.preprocess.full_resolution import to_full_resolution
from faceproc.preprocess.operators import decode_batch


class IdentifyPipeline:
    """File rows ({"path", "layout_error"}) in, IDENTITY_SCHEMA rows out."""

    def __init__(self, config: PreprocessConfig, out: str, model: str, model_version: str, run_id: str,
                 rejects_dir: str) -> None:
        from faceproc.inference.artifact import ModelArtifact
        from faceproc.preprocess.detector import FaceDetector, limit_tf_threads

        limit_tf_threads(config.detector_threads)
        self.config = config
        self.detector = FaceDetector(config)
        artifact = ModelArtifact(out, model)
        self.classifier, self.embedder = artifact.load(), artifact.embedder()
        self.model, self.model_version, self.run_id = model, model_version, run_id
        self.rejects_dir = rejects_dir

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        prep = self.config
        decoded = decode_batch(batch, prep.max_pixels, prep.min_side, prep.draft_side)
        readable = [i for i, reason in enumerate(decoded["reason"]) if not reason]
        candidates = dict(zip(readable, self.detector.detect_candidates([decoded["image"][i] for i in readable])))
        rejects = RejectRows(self.run_id)
        photos: list[tuple[int, list[dict[str, Any]]]] = []
        for i, path in enumerate(decoded["path"]):
            reason, detail, found = decoded["reason"][i], decoded["detail"][i], candidates.get(i)
            faces = (found if reason or isinstance(found, Exception)
                     else self.detector.confident_crops(decoded["image"][i], found))
            if isinstance(faces, Exception):
                reason, detail = RejectReason.UNSUPPORTED.value, f"face detection failed: {describe(faces)}"
            elif not reason and not faces:
                reason, detail = RejectReason.NO_FACE.value, self.detector.no_face_detail(found)
            if reason:
                rejects.add(path, reason, detail, decoded["sha256"][i])
            else:
                photos.append((i, to_full_resolution(faces, decoded["decoded"][i], decoded["data"][i], prep)))
        rejects.stage(self.rejects_dir)
        verdicts = self.classifier.classify_groups([[face["face"] for face in faces] for _, faces in photos],
                                                   with_embeddings=True)
        rows = [self._row(decoded, i, index, face, len(faces), verdict)
                for (i, faces), photo_verdicts in zip(photos, verdicts)
                for index, (face, verdict) in enumerate(zip(faces, photo_verdicts))]
        return pa.Table.from_pylist(rows, schema=IDENTITY_SCHEMA)

    def _row(self, decoded: dict[str, np.ndarray], i: int, index: int, face: dict[str, Any], count: int,
             verdict: dict[str, Any]) -> dict[str, Any]:
        keypoints = face.get("keypoints") or {}
        return {
            "photo_path": decoded["path"][i],
            "photo_sha256": decoded["sha256"][i],
            "face_index": index,
            "faces_in_photo": count,
            "box": [int(v) for v in face["box"]],
            "keypoints": [float(v) for name in KEYPOINT_NAMES for v in keypoints.get(name, (np.nan, np.nan))],
            "confidence": float(face["confidence"]),
            "aligned": bool(face["aligned"]),
            "person": verdict["person"],
            "probability": float(verdict["probability"]),
            "distance": verdict.get("distance"),
            **embedding_columns(verdict.get("embedding"), self.embedder),
            "model": self.model,
            "model_version": self.model_version,
            "face": encode_png(face["face"]),
            "run_id": self.run_id,
        }
