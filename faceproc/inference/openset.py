"""Open-set recognition: is a face one of the known people, or `unknown`?

A softmax head always names one of the people it was trained on, even for a stranger. FaceNet's
L2-normalised embeddings give a second opinion: each known person has a centroid (the mean of
their normalised training embeddings, normalised again), and a face whose Euclidean distance to
the *nearest* centroid exceeds `threshold` is reported as ``"unknown"``. Every distance is between
two points on the unit sphere (0 = same direction, 2 = opposite).

The threshold is chosen from the training faces by leave-one-person-out: each person in turn plays
the stranger, whose distance to the nearest *other* person's centroid is what a stranger would score
(an impostor distance), while every known face's distance to the nearest centroid, its own computed
without it, is what a known face scores (a genuine distance). The threshold is the largest distance
that accepts at most `unknown_far` (config `evaluate.unknown_far`, default 0.01) of the impostor
distances; the false-accept / false-reject curve, the operating point and its estimated rates are
kept in `centroids.json`. With a single person there is no stranger to learn from, and the threshold
falls back to the `unknown_quantile` (0.99) of the faces' distances to their own centroid.
Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

UNKNOWN = "unknown"
CURVE_POINTS = 101  # thresholds on the recorded false-accept / false-reject curve
_EPS = 1e-12


HIGH_FRR = 0.2  # a threshold rejecting more of the known faces than this is said to be unusable


def threshold_warning(calibration: dict[str, Any]) -> str | None:
    """Why a chosen threshold names few known faces, or None: when it rejects more than HIGH_FRR of
    them, some person's faces lie as close to another person as to their own."""
    frr = calibration.get("estimated_frr")
    if not isinstance(frr, (int, float)) or frr <= HIGH_FRR:
        return None
    return (f"the unknown threshold {calibration['threshold']:.3f} calls {frr:.0%} of the known train faces "
            f"unknown: to accept at most {calibration['target_far']:.0%} of {calibration['impostor_trials']} "
            "stranger trials it must sit below a few faces that are as close to another person as to their own "
            "(the same photo filed under two people, or two people alike); predict and identify will say "
            "`unknown` for most faces")


class CentroidsError(ValueError):
    """A centroids object that cannot be used; the message says which part and where."""


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def compute_centroids(embeddings: np.ndarray, labels: Sequence[str], unknown_far: float,
                      quantile: float = 0.99) -> dict[str, Any]:
    """Class centroids of FaceNet embeddings and the distance beyond which a face is unknown.

    `embeddings` is (n, d) (raw backbone outputs; they are L2-normalised here), `labels` the n
    person names. Each centroid is the mean of its class's normalised embeddings, normalised again.
    Returns the `centroids.json` object: {"classes": sorted names, "centroids": [[d floats] per
    class], "threshold", "counts": {name: n}, "metric", "calibration": how the threshold was chosen,
    with the curve}.
    """
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty (n, d) array, got shape {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise ValueError("embeddings contain NaN or infinite values")
    labels = [str(label) for label in labels]
    if len(labels) != emb.shape[0]:
        raise ValueError(f"{emb.shape[0]} embeddings but {len(labels)} labels")
    for name, value in (("unknown_far", unknown_far), ("quantile", quantile)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    normed = l2_normalize(emb)
    classes = sorted(set(labels))
    index = {name: i for i, name in enumerate(classes)}
    label_idx = np.array([index[label] for label in labels])
    sums = np.stack([normed[label_idx == i].sum(axis=0) for i in range(len(classes))])
    centroids = l2_normalize(sums)
    if len(classes) > 1:
        calibration = leave_one_person_out(normed, label_idx, sums, float(unknown_far))
    else:
        own = np.linalg.norm(normed - centroids[label_idx], axis=1)
        calibration = {"method": "quantile of own-centroid distances (one person: no stranger to learn from)",
                       "quantile": float(quantile), "threshold": float(np.quantile(own, quantile))}
    return {
        "classes": classes,
        "centroids": centroids.astype(np.float64).tolist(),
        "threshold": calibration["threshold"],
        "counts": {name: int(np.sum(label_idx == i)) for name, i in index.items()},
        "metric": "euclidean between L2-normalised embeddings",
        "calibration": calibration,
    }


def leave_one_person_out(normed: np.ndarray, label_idx: np.ndarray, sums: np.ndarray,
                         unknown_far: float) -> dict[str, Any]:
    """The threshold accepting at most `unknown_far` of the strangers, with the FAR / FRR curve.

    Impostor distance of a face: to the nearest centroid of the *other* people (it is the stranger;
    their centroids do not depend on it). Genuine distance: to the nearest centroid, its own
    computed without it (a person with one face has none, so only the others count)."""
    centroids = l2_normalize(sums)
    distances = np.linalg.norm(normed[:, None, :] - centroids[None, :, :], axis=2)  # (n, k)
    rows = np.arange(len(normed))
    others = distances.copy()
    others[rows, label_idx] = np.inf
    impostor = others.min(axis=1)
    counts = np.bincount(label_idx, minlength=len(sums))
    own_without = l2_normalize(sums[label_idx] - normed)
    own = np.where(counts[label_idx] > 1, np.linalg.norm(normed - own_without, axis=1), np.inf)
    genuine = np.minimum(own, impostor)

    ranked = np.sort(impostor)
    allowed = int(np.floor(unknown_far * len(ranked)))  # strangers that may be accepted
    threshold = float(np.nextafter(ranked[allowed], 0)) if allowed < len(ranked) else float(ranked[-1])
    grid = np.linspace(0.0, float(max(impostor.max(), genuine.max())), CURVE_POINTS)
    return {
        "method": "leave-one-person-out over the training faces",
        "target_far": unknown_far,
        "threshold": threshold,
        "estimated_far": float(np.mean(impostor <= threshold)),
        "estimated_frr": float(np.mean(genuine > threshold)),
        "impostor_trials": int(len(impostor)),
        "genuine_trials": int(len(genuine)),
        "curve": {"threshold": grid.round(4).tolist(),
                  "far": [float(np.mean(impostor <= t)) for t in grid],
                  "frr": [float(np.mean(genuine > t)) for t in grid]},
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
