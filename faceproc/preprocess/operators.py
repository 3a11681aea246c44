"""The per-batch steps of the preprocessing dataset: decode, detect, finalize, in one actor.

They run fused in `FacePipeline` so that full-size decoded photos never travel through the object
store: an actor takes file rows and returns encoded face rows. A bad file never raises: its failure
becomes `reason`/`detail` on its row and, at the end, a reject record.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from faceproc.config import PreprocessConfig
from faceproc.core import storage
from faceproc.core.images import encode_png, object_array
from faceproc.core.rejects import RejectRows
from faceproc.core.schema import FACE_SCHEMA, RejectError, RejectReason
from faceproc.preprocess.augment import augment_face
from faceproc.preprocess.decode import Decoded, decode_reduced
from faceproc.preprocess.full_resolution import to_full_resolution

EMPTY_IMAGE = np.zeros((0, 0, 3), np.uint8)
PARTITION_COLUMN = "_split"  # Hive partition of the staged faces; dropped from the files written


def decode_batch(batch: dict[str, np.ndarray], max_pixels: int, min_side: int,
                 longest_side: int | None = None) -> dict[str, np.ndarray]:
    """Read, hash and decode each file to RGB (big JPEGs at reduced size, see `decode_reduced`);
    failures become a reason on the row. `decoded` holds each photo's `Decoded` (its scale) and `data`
    the bytes of the reduced ones, for `full_resolution.to_full_resolution`.

    The SHA-256 is taken here, from the bytes read for decoding, so no file is read twice."""
    images, reasons, details, hashes, decodes, raw = [], [], [], [], [], []
    for path, layout_error in zip(batch["path"], batch["layout_error"]):
        image, reason, detail, sha, decoded, data = EMPTY_IMAGE, "", "", "", Decoded(EMPTY_IMAGE), b""
        try:
            data = storage.read_bytes(path)
            sha = hashlib.sha256(data).hexdigest()
            if layout_error:
                raise RejectError(RejectReason.BAD_LAYOUT, layout_error)
            decoded = decode_reduced(data, max_pixels, min_side, longest_side)
            image = decoded.image
        except RejectError as exc:
            reason, detail = exc.reason.value, exc.detail
        except OSError as exc:
            reason, detail = RejectReason.READ_ERROR.value, str(exc)
        images.append(image)
        reasons.append(reason)
        details.append(detail)
        hashes.append(sha)
        decodes.append(decoded)
        raw.append(data if decoded.reduced else b"")
    out = dict(batch)
    out.update(sha256=np.array(hashes), image=object_array(images), reason=np.array(reasons),
               detail=np.array(details), decoded=object_array(decodes), data=object_array(raw))
    return out


def full_resolution_rows(batch: dict[str, np.ndarray], prep: PreprocessConfig) -> dict[str, np.ndarray]:
    """The detected rows of photos decoded at reduced size, with box and crop in full resolution."""
    for i, decoded in enumerate(batch["decoded"]):
        if batch["reason"][i] or not decoded.reduced:
            continue
        face = {"box": batch["box"][i], "keypoints": batch["keypoints"][i], "face": batch["face"][i],
                "aligned": batch["aligned"][i], "confidence": batch["confidence"][i]}
        (full,) = to_full_resolution([face], decoded, batch["data"][i], prep)
        batch["box"][i], batch["face"][i], batch["aligned"][i] = full["box"], full["face"], full["aligned"]
    return batch


class Finalizer:
    """Turns detected rows into face rows (plus augmented copies for train) and stages rejects.

    Reject rows are written to their own staging folder here, because a Ray Data stream can feed only
    one sink; the driver gathers them when the run is published.
    """

    def __init__(self, run_id: str, seed: int, augment_copies: int, rejects_dir: str) -> None:
        self.run_id = run_id
        self.seed = seed
        self.augment_copies = augment_copies
        self.rejects_dir = rejects_dir

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        faces: dict[str, list] = {name: [] for name in [*FACE_SCHEMA.names, PARTITION_COLUMN]}
        rejects = RejectRows(self.run_id)
        for i, path in enumerate(batch["path"]):
            if batch["reason"][i]:
                rejects.add(path, batch["reason"][i], batch["detail"][i], batch["sha256"][i],
                            split=batch["split"][i], label=batch["label"][i])
                continue
            copies = self.augment_copies if batch["split"][i] == "train" else 0
            for index in range(copies + 1):
                face = batch["face"][i]
                if index:
                    face = augment_face(face, self.seed, batch["sha256"][i], index)
                row = {
                    "image": encode_png(face),
                    "label": batch["label"][i],
                    "label_id": int(batch["label_id"][i]),
                    "split": batch["split"][i],
                    "source_path": path,
                    "source_sha256": batch["sha256"][i],
                    "box": [int(v) for v in batch["box"][i]],
                    "confidence": float(batch["confidence"][i]),
                    "faces_found": int(batch["faces_found"][i]),
                    "augment_index": index,
                    "aligned": bool(batch["aligned"][i]),
                    "run_id": self.run_id,
                    PARTITION_COLUMN: batch["split"][i],
                }
                for name, value in row.items():
                    faces[name].append(value)
        rejects.stage(self.rejects_dir)
        schema = FACE_SCHEMA.append(pa.field(PARTITION_COLUMN, pa.string()))
        return pa.table(faces, schema=schema)


class FacePipeline:
    """Ray Data callable class: MTCNN loaded once per actor; file rows in, face rows out."""

    def __init__(self, config: PreprocessConfig, run_id: str, rejects_dir: str) -> None:
        from faceproc.preprocess.detector import FaceDetector, limit_tf_threads

        limit_tf_threads(config.detector_threads)
        self.config = config
        self.detect = FaceDetector(config)
        self.finalize = Finalizer(run_id, config.seed, config.augment_copies, rejects_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        prep = self.config
        decoded = decode_batch(batch, prep.max_pixels, prep.min_side, prep.draft_side)
        return self.finalize(full_resolution_rows(self.detect(decoded), prep))
