"""Open-set recognition: is a face one of the known people, or `unknown`?

A softmax head always names one of the people it was trained on, even for a stranger. FaceNet's
L2-normalised embeddings give a second opinion: each known person has a centroid (the mean of
their normalised training embeddings, normalised again), and a face whose Euclidean distance to
the *nearest* centroid exceeds `threshold` is reported as ``"unknown"``. Every distance is between
two points on the unit sphere (0 = same direction, 2 = opposite).

The threshold is the `unknown_quantile` (config `evaluate.unknown_quantile`, default 0.99) of the
distances of the *training* embeddings to their own class centroid, times THRESHOLD_SCALE (1.0, no
margin): with 0.99 about 1% of the training faces themselves would be called unknown. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

UNKNOWN = "unknown"
THRESHOLD_SCALE = 1.0  # threshold = quantile of train distances x this (no margin)
_EPS = 1e-12


class CentroidsError(ValueError):
    """A centroids object that cannot be used; the message says which part and where."""


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
        raise CentroidsError(f"{where}: needs classes, centroids and threshold ({type(exc).__name__}: {exc})") from None
    if centroids.ndim != 2 or centroids.shape[0] != len(classes) or not classes:
        raise CentroidsError(f"{where}: {len(classes)} classes but centroids of shape {centroids.shape}")
    if not np.all(np.isfinite(centroids)) or not math.isfinite(threshold) or threshold < 0:
        raise CentroidsError(f"{where}: centroids and threshold must be finite, threshold >= 0")
    return {**obj, "classes": classes, "centroids": centroids, "threshold": threshold}


def nearest_centroid(embeddings: np.ndarray, centroids: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """For each embedding (n, d), the nearest class and its distance (both L2-normalised)."""
    table = validate_centroids(centroids)
    emb = l2_normalize(np.atleast_2d(np.asarray(embeddings, dtype=np.float64)))
    cents = l2_normalize(table["centroids"])
    if emb.shape[1] != cents.shape[1]:
        raise CentroidsError(f"embeddings have {emb.shape[1]} dimensions, centroids {cents.shape[1]}")
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
