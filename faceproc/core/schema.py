"""The Parquet schemas of faceproc's outputs and the closed set of reject reasons.

Names and types here are part of the output contract (see README "Outputs under OUT" and "Identify").
"""

from __future__ import annotations

from enum import Enum

import pyarrow as pa


class Status(str, Enum):
    """What became of a model in training or evaluation (`result.json`, `accuracy.json`)."""

    OK = "ok"
    SKIPPED = "skipped"  # pretrained weights cannot be had; the reason says where to put them
    FAILED = "failed"
    STALE = "stale"  # trained on other preprocessing settings or people than there are now: not evaluated

    def __str__(self) -> str:  # "ok", not "Status.OK", in messages and tables on every Python
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class RejectReason(str, Enum):
    """Why an input file produced no face row."""

    EMPTY_FILE = "empty_file"  # zero bytes
    NOT_AN_IMAGE = "not_an_image"  # content is not a recognised image format
    TRUNCATED = "truncated"  # a recognised image whose data ends early or is corrupt
    TOO_LARGE = "too_large"  # declares more pixels than preprocess.max_pixels
    TOO_SMALL = "too_small"  # shorter side below preprocess.min_side
    UNSUPPORTED = "unsupported"  # an image format or mode faceproc cannot turn into RGB
    NO_FACE = "no_face"  # MTCNN found no face above preprocess.min_face_confidence
    BAD_LAYOUT = "bad_layout"  # not at <root>/<split>/<person>/<file>
    READ_ERROR = "read_error"  # the file could not be read


class RejectError(Exception):
    """Raised inside per-file steps; the pipeline turns it into a reject row, never a failed block."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


# One row per face image (the original crop, augment_index 0, or an augmented copy).
FACE_SCHEMA = pa.schema(
    [
        pa.field("image", pa.binary(), nullable=False),  # PNG, face_size x face_size RGB
        pa.field("label", pa.string(), nullable=False),  # person, from the folder name
        pa.field("label_id", pa.int32(), nullable=False),  # index in the sorted people of the writing run
        pa.field("split", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("box", pa.list_(pa.int32(), 4), nullable=False),  # x0, y0, x1, y1 in source pixels
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("faces_found", pa.int32(), nullable=False),
        pa.field("augment_index", pa.int32(), nullable=False),  # 0 = original crop
        pa.field("aligned", pa.bool_()),  # warped onto the keypoint template (false: margin crop)
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

# The columns a model's reader takes from the face shards (training and evaluation).
MODEL_INPUT_COLUMNS = ["image", "label", "source_path", "source_sha256", "augment_index"]

# One row per input file that produced no face row.
REJECT_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("label", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

# One row per input file seen (skipped hidden files are counted, not listed).
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("split", pa.string()),
        pa.field("label", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # "ok" (face rows) or "rejected"
        pa.field("reason", pa.string()),  # reject reason, null when ok
        pa.field("face_rows", pa.int32(), nullable=False),
        pa.field("leakage", pa.bool_(), nullable=False),  # same content also in another split
        pa.field("run_id", pa.string(), nullable=False),  # the run that processed this content
        pa.field("settings", pa.string()),  # fingerprint of the preprocessing settings (null: unknown)
        pa.field("size", pa.int64()),  # bytes, from the listing (null: not known, the content decides)
        pa.field("mtime_ns", pa.int64()),  # modification time from the listing, ns since the epoch
    ]
)

# MTCNN's five keypoints, in the order they are stored; the names say which side of the *photo*
# (left_eye is the eye with the smaller x), as mtcnn 1.0 names them.
KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# One row per face `faceproc identify` found (every confident face of every photo).
IDENTITY_SCHEMA = pa.schema(
    [
        pa.field("photo_path", pa.string(), nullable=False),
        pa.field("photo_sha256", pa.string(), nullable=False),
        pa.field("face_index", pa.int32(), nullable=False),  # 0 = the most confident face of the photo
        pa.field("faces_in_photo", pa.int32(), nullable=False),
        pa.field("box", pa.list_(pa.int32(), 4), nullable=False),  # x0, y0, x1, y1 in photo pixels
        pa.field("keypoints", pa.list_(pa.float32(), 10), nullable=False),  # x, y of KEYPOINT_NAMES in order
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("aligned", pa.bool_(), nullable=False),
        pa.field("person", pa.string(), nullable=False),  # a known person, or "unknown"
        pa.field("probability", pa.float32(), nullable=False),  # the classifier's top softmax output
        pa.field("distance", pa.float32()),  # to the nearest known person's centroid (null: no centroids)
        pa.field("embedding", pa.list_(pa.float32())),  # the FaceNet embedding of `face` (null: no backbone)
        pa.field("embedder", pa.string()),  # the backbone weights' SHA-256 when frozen (null: none to reuse)
        pa.field("model", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),  # the model's training fingerprint
        pa.field("face", pa.binary(), nullable=False),  # PNG of the crop the model saw
        pa.field("run_id", pa.string(), nullable=False),
    ]
)
