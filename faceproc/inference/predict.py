"""`faceproc predict`: name and probability for every face in a few images, in-process (no Ray).

Each image is read (local path or URI), decoded like preprocessing does (`decode_image`), every
confident face is found with MTCNN (`FaceDetector.detect_all`, the same crop and margin the shards
hold) and each crop is classified by a trained model under `OUT/models/<name>/`.

Open-set recognition with FaceNet ("unknown")
---------------------------------------------
A softmax head always names one of the people it was trained on, even for a stranger. When the
model directory holds `centroids.json` (the training job writes it for `facenet`, with
:func:`compute_centroids`), each face is also embedded with the model's FaceNet backbone, the
embedding is L2-normalised, and if its Euclidean distance to the *nearest* class centroid exceeds
the stored `threshold` the person is reported as ``"unknown"``. The probability reported is still
the softmax maximum, so a confident-but-far face is visible as such.

The threshold is the `unknown_quantile` (config `evaluate.unknown_quantile`, default 0.99) of the
distances of the *training* embeddings to their own class centroid, times 1.0 (no extra margin):
with 0.99 about 1% of the training faces themselves would be called unknown. Centroids are the
mean of a class's L2-normalised embeddings, L2-normalised again, so every distance is between two
points on the unit sphere (0 = same direction, 2 = opposite).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from faceproc.core import storage
from faceproc.core.errors import describe
from faceproc.config import Config

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
RESULT_FILE = "result.json"
CENTROIDS_FILE = "centroids.json"
BACKBONE_LAYER = "facenet"  # faceproc.models.facenet.wrap_backbone's default name
THRESHOLD_SCALE = 1.0  # threshold = quantile of train distances x this (no margin)
_EPS = 1e-12


class PredictError(RuntimeError):
    """A model cannot be used for prediction; the message says which file and what to run."""


# --------------------------------------------------------------------------------------------
# Model files (shared with faceproc.evaluate)


def model_dir(out: str, name: str) -> str:
    return storage.join(out, "models", name)


def read_classes(uri: str) -> list[str]:
    """The person names of `classes.json` (a non-empty list of distinct strings)."""
    try:
        classes = storage.read_json(uri)
    except FileNotFoundError:
        raise PredictError(f"{uri} is missing: run `faceproc train` first") from None
    except (OSError, ValueError) as exc:
        raise PredictError(f"{uri} cannot be read: {type(exc).__name__}: {exc}") from None
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise PredictError(f"{uri} must hold a non-empty list of distinct person names")
    return classes


def load_keras_model(model_uri: str):
    """Load a `.keras` file from a local path or a URI (a remote file is copied to a temp dir first)."""
    from faceproc.models.saving import load_model  # importing faceproc.models registers the layers

    if storage.is_local(model_uri):
        _, path = storage.resolve(model_uri)
        return load_model(path, compile=False)
    tmp_dir = tempfile.mkdtemp(prefix="faceproc-model-")
    try:
        path = os.path.join(tmp_dir, MODEL_FILE)
        with open(path, "wb") as f:
            f.write(storage.read_bytes(model_uri))
        return load_model(path, compile=False)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def input_size(model) -> tuple[int, int]:
    """(height, width) the model takes."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise PredictError(f"model input shape {shape} is not (None, height, width, 3)")
    return int(shape[1]), int(shape[2])


def fit_to_input(faces: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Stack RGB uint8 crops as float32 0..255, resized to `size` (h, w) when a crop differs."""
    import cv2

    height, width = size
    out = np.empty((len(faces), height, width, 3), np.float32)
    for i, face in enumerate(faces):
        if face.shape[:2] != (height, width):
            face = cv2.resize(face, (width, height), interpolation=cv2.INTER_AREA)
        out[i] = face
    return out


def check_outputs(model, classes: Sequence[str], where: str) -> None:
    units = model.output_shape[-1]
    if units != len(classes):
        raise PredictError(f"{where}: the model has {units} outputs but classes.json names {len(classes)} people")


# --------------------------------------------------------------------------------------------
# Centroids and the "unknown" decision (pure numpy)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def compute_centroids(embeddings: np.ndarray, labels: Sequence[str], quantile: float) -> dict[str, Any]:
    """Class centroids of FaceNet embeddings and the distance beyond which a face is unknown.

    `embeddings` is (n, d) (raw backbone outputs; they are L2-normalised here), `labels` the n
    person names. Each centroid is the mean of its class's normalised embeddings, normalised
    again. `threshold` is the `quantile` (0..1) of the Euclidean distances of every embedding to
    its own class centroid, times THRESHOLD_SCALE (1.0). Returns the `centroids.json` object:
    {"classes": sorted names, "centroids": [[d floats] per class], "threshold": float,
    "quantile", "counts": {name: n}, "metric"}.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise ValueError("embeddings contain NaN or infinite values")
    labels = [str(label) for label in labels]
    if len(labels) != emb.shape[0]:
        raise ValueError(f"{emb.shape[0]} embeddings but {len(labels)} labels")
    quantile = float(quantile)
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    normed = l2_normalize(emb)
    classes = sorted(set(labels))
    index = {name: i for i, name in enumerate(classes)}
    label_idx = np.array([index[label] for label in labels])
    centroids = np.stack([normed[label_idx == i].mean(axis=0) for i in range(len(classes))])
    centroids = l2_normalize(centroids)
    distances = np.linalg.norm(normed - centroids[label_idx], axis=1)
    threshold = float(np.quantile(distances, quantile)) * THRESHOLD_SCALE
    return {
        "classes": classes,
        "centroids": centroids.astype(np.float64).tolist(),
        "threshold": threshold,
        "quantile": quantile,
        "counts": {name: int(np.sum(label_idx == i)) for name, i in index.items()},
        "metric": "euclidean between L2-normalised embeddings",
    }


def validate_centroids(obj: Any, where: str = "centroids") -> dict[str, Any]:
    """`obj` checked to be a usable centroids object; returns it with `centroids` as an array."""
    try:
        classes = [str(c) for c in obj["classes"]]
        centroids = np.asarray(obj["centroids"], dtype=np.float64)
        threshold = float(obj["threshold"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PredictError(f"{where}: needs classes, centroids and threshold ({type(exc).__name__}: {exc})") from None
    if centroids.ndim != 2 or centroids.shape[0] != len(classes) or not classes:
        raise PredictError(f"{where}: {len(classes)} classes but centroids of shape {centroids.shape}")
    if not np.all(np.isfinite(centroids)) or not math.isfinite(threshold) or threshold < 0:
        raise PredictError(f"{where}: centroids and threshold must be finite, threshold >= 0")
    return {**obj, "classes": classes, "centroids": centroids, "threshold": threshold}


def nearest_centroid(embeddings: np.ndarray, centroids: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """For each embedding (n, d), the nearest class and its distance (both L2-normalised)."""
    table = validate_centroids(centroids)
    emb = l2_normalize(np.atleast_2d(np.asarray(embeddings, dtype=np.float64)))
    cents = l2_normalize(table["centroids"])
    if emb.shape[1] != cents.shape[1]:
        raise PredictError(f"embeddings have {emb.shape[1]} dimensions, centroids {cents.shape[1]}")
    dist = np.linalg.norm(emb[:, None, :] - cents[None, :, :], axis=2)
    nearest = dist.argmin(axis=1)
    return [table["classes"][i] for i in nearest], dist[np.arange(len(emb)), nearest]


def decide(
    probabilities: np.ndarray,
    classes: Sequence[str],
    distances: np.ndarray | None = None,
    threshold: float | None = None,
) -> list[tuple[str, float]]:
    """(person, probability) per row of `probabilities` (n, k): the softmax argmax and its value;
    the person becomes UNKNOWN where `distances` (to the nearest centroid) exceed `threshold`."""
    probs = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    best = probs.argmax(axis=1)
    out = []
    for i, j in enumerate(best):
        person = classes[j]
        if distances is not None and threshold is not None and float(distances[i]) > threshold:
            person = UNKNOWN
        out.append((person, float(probs[i, j])))
    return out


# --------------------------------------------------------------------------------------------
# Classifier: a trained model directory ready to use


class Classifier:
    """One trained model (`OUT/models/<name>/`) with its classes and, for FaceNet, its centroids."""

    def __init__(self, out: str, name: str) -> None:
        directory = model_dir(out, name)
        model_uri = storage.join(directory, MODEL_FILE)
        self.name = name
        result_uri = storage.join(directory, RESULT_FILE)
        if storage.exists(result_uri):
            result = storage.read_json(result_uri)
            status = result.get("status") if isinstance(result, dict) else None
            if status not in (None, "ok"):
                why = result.get("reason") or "no reason given"
                raise PredictError(f"model {name!r} was {status} in training ({why}): run `faceproc train` again")
        if not storage.exists(model_uri):
            trained = [
                m for m in storage.list_dirs(storage.join(out, "models"))
                if storage.exists(storage.join(out, "models", m, MODEL_FILE))
            ]
            have = f" (trained models: {', '.join(trained)})" if trained else ""
            raise PredictError(f"no trained model {name!r}: {model_uri} is missing{have}; run `faceproc train` first")
        self.classes = read_classes(storage.join(directory, CLASSES_FILE))
        self.model = load_keras_model(model_uri)
        check_outputs(self.model, self.classes, model_uri)
        self.size = input_size(self.model)

        self.centroids: dict[str, Any] | None = None
        self.backbone = self.head = None
        centroids_uri = storage.join(directory, CENTROIDS_FILE)
        if storage.exists(centroids_uri):
            self.centroids = validate_centroids(storage.read_json(centroids_uri), centroids_uri)
            self.backbone, self.head = _split_facenet(self.model, model_uri)
        elif name == "facenet":
            log.warning("%s is missing: faces are not checked against the known people ('unknown')", centroids_uri)

    def classify(self, faces: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """{"person", "probability"[, "distance"]} per RGB uint8 face crop."""
        if not len(faces):
            return []
        x = fit_to_input(faces, self.size)
        if self.backbone is None:
            probs = self.model(x, training=False).numpy()
            return [{"person": p, "probability": q} for p, q in decide(probs, self.classes)]
        embeddings = self.backbone(x, training=False).numpy()
        if self.head is not None:
            probs = self.head(embeddings, training=False).numpy()
        else:
            probs = self.model(x, training=False).numpy()
        _, distances = nearest_centroid(embeddings, self.centroids)
        decided = decide(probs, self.classes, distances, self.centroids["threshold"])
        return [
            {"person": p, "probability": q, "distance": float(d)} for (p, q), d in zip(decided, distances)
        ]


def _split_facenet(model, where: str):
    """The model's FaceNet backbone sub-model and, when the model is exactly backbone -> head, the head."""
    from faceproc.models.keras_env import keras

    try:
        backbone = model.get_layer(BACKBONE_LAYER)
    except ValueError:
        raise PredictError(f"{where}: centroids.json is present but the model has no {BACKBONE_LAYER!r} backbone") from None
    rest = [layer for layer in model.layers if layer is not backbone and not isinstance(layer, keras.layers.InputLayer)]
    head = None
    if len(rest) == 1 and tuple(getattr(rest[0], "input_shape", ()) or ()) == tuple(backbone.output_shape):
        head = rest[0]
    return backbone, head


# --------------------------------------------------------------------------------------------
# predict_images and output formats


def _failure(image: str, reason: str, detail: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"image": image, "box": None, "person": None, "probability": None, "reason": reason}
    if detail:
        row["detail"] = detail
    return row


def predict_images(config: Config, image_paths: list[str], model: str = "facenet") -> list[dict[str, Any]]:
    """One dict per face found in each image, images in the given order, faces best first.

    A face: {"image": path, "box": [x0, y0, x1, y1] (pixels of the upright image, x1/y1 exclusive),
    "person": name or "unknown", "probability": softmax max} (+ "distance" to the nearest
    centroid when the model has centroids.json). An image with no face:
    {"image", "box": None, "person": None, "probability": None, "reason": "no_face"}; an image that
    cannot be read or decoded the same with the reject reason ("not_an_image", "truncated", ...)
    and a "detail". Raises PredictError when the model cannot be used (not trained, ...).
    """
    from faceproc.preprocess.decode import decode_image
    from faceproc.preprocess.detector import FaceDetector
    from faceproc.core.schema import RejectError, RejectReason

    prep = config.preprocess
    classifier = Classifier(config.output, model)
    detector = FaceDetector(prep)
    rows: list[dict[str, Any]] = []
    for path in image_paths:
        try:
            data = storage.read_bytes(path)
        except (OSError, ValueError) as exc:  # missing file, permission, bad URI
            rows.append(_failure(path, RejectReason.READ_ERROR.value, f"{type(exc).__name__}: {exc}"))
            continue
        try:
            rgb = decode_image(data, prep.max_pixels, prep.min_side)
        except RejectError as exc:
            rows.append(_failure(path, exc.reason.value, exc.detail))
            continue
        try:
            faces = detector.detect_all(rgb)
        except Exception as exc:  # noqa: BLE001 - one odd image must not stop the others
            rows.append(_failure(path, RejectReason.UNSUPPORTED.value, f"face detection failed: {describe(exc)}"))
            continue
        if not faces:
            rows.append(_failure(path, RejectReason.NO_FACE.value))
            continue
        verdicts = classifier.classify([face["face"] for face in faces])
        for face, verdict in zip(faces, verdicts):
            rows.append({"image": path, "box": [int(v) for v in face["box"]], **verdict})
    return rows


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
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(headers)]
    right = {"probability", "distance"}

    def line(cells: list[str]) -> str:
        parts = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, headers)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in table])


def json_lines(rows: Sequence[dict[str, Any]]) -> str:
    """One JSON object per line: image, box, person, probability, plus reason (and detail) when
    the image gave no face."""
    lines = []
    for row in rows:
        obj: dict[str, Any] = {
            "image": row.get("image"),
            "box": None if row.get("box") is None else [int(v) for v in row["box"]],
            "person": row.get("person"),
            "probability": None if row.get("probability") is None else float(row["probability"]),
        }
        if row.get("reason"):
            obj["reason"] = row["reason"]
            if row.get("detail"):
                obj["detail"] = row["detail"]
        lines.append(json.dumps(obj, ensure_ascii=False))
    return "\n".join(lines) + ("\n" if lines else "")
