"""`faceproc predict`: name and probability for every face in a few images, in-process (no Ray).

Each image is read (local path or URI), decoded like preprocessing does (`decode_reduced`, then
`to_full_resolution` for the crop), every confident face is found with MTCNN
(`FaceDetector.detect_all`, the same crop and margin the shards hold) and each crop is classified by
the trained model's artifact (`inference.artifact`), with the open-set check (`inference.openset`)
when the model has centroids: a face far from every known person is ``"unknown"``. The faces of up
to `CLASSIFY_CHUNK` images go to the model in one call.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faceproc.config import Config, PreprocessConfig
from faceproc.core import storage
from faceproc.core.errors import describe
from faceproc.core.schema import RejectError, RejectReason
from faceproc.core.text import aligned_table
from faceproc.inference.artifact import ModelArtifact

if TYPE_CHECKING:
    from faceproc.preprocess.detector import FaceDetector


def _failure(image: str, reason: str, detail: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"image": image, "box": None, "person": None, "probability": None, "reason": reason}
    if detail:
        row["detail"] = detail
    return row


@dataclass(frozen=True)
class _ImageFaces:
    """One image's confident faces, or the row that says why it has none."""

    faces: list[dict[str, Any]] = field(default_factory=list)
    failure: dict[str, Any] | None = None


# Images whose faces are classified in one model call. One call per face costs a forward pass of its
# own (FaceNet on this kind of CPU: about 0.5 s for one face, 2 s for 32); a chunk keeps memory flat
# however many images are given.
CLASSIFY_CHUNK = 32


def predict_images(config: Config, image_paths: list[str], model: str = "facenet") -> list[dict[str, Any]]:
    """One dict per face found in each image, images in the given order, faces best first.

    A face: {"image": path, "box": [x0, y0, x1, y1] (pixels of the upright image, x1/y1 exclusive),
    "person": name or "unknown", "probability": softmax max} (+ "distance" to the nearest
    centroid when the model has centroids.json). An image with no face:
    {"image", "box": None, "person": None, "probability": None, "reason": "no_face"}; an image that
    cannot be read or decoded the same with the reject reason ("not_an_image", "truncated", ...)
    and a "detail". Raises ArtifactError when the model cannot be used (not trained, ...).
    """
    from faceproc.inference.crop_settings import training_preprocess
    from faceproc.preprocess.detector import FaceDetector

    artifact = ModelArtifact(config.output, model)
    classifier = artifact.load()
    prep = training_preprocess(config.output, config.preprocess, artifact.result())
    detector = FaceDetector(prep)
    rows: list[dict[str, Any]] = []
    for start in range(0, len(image_paths), CLASSIFY_CHUNK):
        found = [(path, _faces_in(path, detector, prep)) for path in image_paths[start:start + CLASSIFY_CHUNK]]
        crops = [[face["face"] for face in image.faces] for _, image in found]
        for (path, image), verdicts in zip(found, classifier.classify_groups(crops)):
            if image.failure is not None:
                rows.append(image.failure)
                continue
            rows.extend({"image": path, "box": [int(v) for v in face["box"]], **verdict}
                        for face, verdict in zip(image.faces, verdicts))
    return rows


def _faces_in(path: str, detector: FaceDetector, prep: PreprocessConfig) -> _ImageFaces:
    """The confident faces of the image at `path` (at least one), or its failure row."""
    from faceproc.preprocess.decode import decode_reduced
    from faceproc.preprocess.full_resolution import to_full_resolution

    try:
        data = storage.read_bytes(path)
    except (OSError, ValueError) as exc:  # missing file, permission, bad URI
        return _ImageFaces(failure=_failure(path, RejectReason.READ_ERROR.value, f"{type(exc).__name__}: {exc}"))
    try:
        decoded = decode_reduced(data, prep.max_pixels, prep.min_side, prep.draft_side)
    except RejectError as exc:
        return _ImageFaces(failure=_failure(path, exc.reason.value, exc.detail))
    try:
        faces = to_full_resolution(detector.detect_all(decoded.image), decoded, data, prep)
    except Exception as exc:  # noqa: BLE001 - one odd image must not stop the others
        failure = _failure(path, RejectReason.UNSUPPORTED.value, f"face detection failed: {describe(exc)}")
        return _ImageFaces(failure=failure)
    return _ImageFaces(faces) if faces else _ImageFaces(failure=_failure(path, RejectReason.NO_FACE.value))


def unreadable(rows: Sequence[dict[str, Any]]) -> int:
    """Images that could not be read or decoded (an image with no face was read)."""
    return len({row["image"] for row in rows if row.get("reason") not in (None, RejectReason.NO_FACE.value)})


def _probability_text(value: Any) -> str:
    return "" if value is None else f"{float(value):.3f}"


NOTES = {"no_face": "no face found"}  # reasons said plainly in the table; --json keeps the codes


def format_predictions(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: image, box, person, probability (and distance), note."""
    with_distance = any(row.get("distance") is not None for row in rows)
    headers = ["image", "box", "person", "probability"] + (["distance"] if with_distance else []) + ["note"]
    table = []
    for row in rows:
        box = row.get("box")
        note = NOTES.get(row.get("reason") or "", row.get("reason") or "")
        if row.get("detail"):
            note = f"{note}: {row['detail']}" if note else str(row["detail"])
        cells = [
            str(row.get("image", "")),
            "" if box is None else ",".join(str(int(v)) for v in box),
            "–" if row.get("person") is None else str(row["person"]),
            _probability_text(row.get("probability")),
        ]
        if with_distance:
            cells.append("" if row.get("distance") is None else f"{float(row['distance']):.3f}")
        cells.append(note)
        table.append(cells)
    if not table:
        return "no images"
    return "\n".join(aligned_table(headers, table, right={"probability", "distance"}))


def json_lines(rows: Sequence[dict[str, Any]]) -> str:
    """One JSON object per line, every one with the same keys (a table for jq or pandas): image, box,
    person, probability, distance (null without an open-set check), reason and detail (null for a face;
    why, for an image that gave none)."""
    lines = []
    for row in rows:
        obj: dict[str, Any] = {
            "image": row.get("image"),
            "box": None if row.get("box") is None else [int(v) for v in row["box"]],
            "person": row.get("person"),
            "probability": None if row.get("probability") is None else float(row["probability"]),
            "distance": None if row.get("distance") is None else float(row["distance"]),
            "reason": row.get("reason") or None,
            "detail": row.get("detail") or None,
        }
        lines.append(json.dumps(obj, ensure_ascii=False))
    return "\n".join(lines) + ("\n" if lines else "")
