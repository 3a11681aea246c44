"""Accuracy metrics: the rows of the accuracy table (`reports/accuracy.{json,csv,md}`).

Pure functions over plain Python values and Arrow tables: no Ray, no TensorFlow. Every row of
the table is one model, in the order the models were trained; models that were skipped or failed
keep their row with null metrics and the reason.

Conventions (part of the output contract, README "Evaluation and report"):

- `accuracy` is correct / n over the validation *face images* the model predicted.
- `ci_low`, `ci_high` is the 95% Wilson score interval of that accuracy.
- `accuracy_end_to_end` also counts validation photos rejected in preprocessing (no face found,
  unreadable, ...) as errors: correct / (n + val_rejects). This is the number comparable with the
  reference notebook, which had to classify every one of its 25 validation photos.
- `macro_f1` is the unweighted mean of per-person F1 over the people in `labels`; a person who is
  neither in the truth nor in the predictions has no defined F1 and is left out of the mean.
- `per_class` is recall per person (None for a person with no validation image).
- Undefined numbers (no predictions at all) are NaN from the pure functions and null (None) in
  the rows and files, so accuracy.json stays strict JSON.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from faceproc.core.model_names import REFERENCE_VAL_DIGEST
from faceproc.core.schema import Status

Z_95 = 1.959964  # two-sided 95% normal quantile

# Keys of one accuracy row, in output order (accuracy.json objects, accuracy.csv columns).
ROW_KEYS: tuple[str, ...] = (
    "model",
    "status",
    "reason",
    "n",
    "accuracy",
    "ci_low",
    "ci_high",
    "macro_f1",
    "per_class",
    "train_seconds",
    "n_end_to_end",
    "accuracy_end_to_end",
    "reference",
)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion `successes / n`.

    Returns `(nan, nan)` when `n == 0`: with no trials the proportion is undefined, and a made-up
    (0, 0) would read as "certainly always wrong". Callers that serialise turn NaN into null.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = (z / denom) * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def classification_metrics(
    true: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy with its Wilson interval, macro F1, recall per person and the confusion matrix.

    Returns a dict with:
      - `n`, `correct`, `accuracy`, `ci_low`, `ci_high`, `macro_f1` (NaN when undefined),
      - `per_class`: {person: recall or None when the person has no true example},
      - `labels`: the people (rows of the matrix),
      - `confusion`: rows = true person in `labels` order, columns = `confusion_columns`,
      - `confusion_columns`: `labels` followed by any predicted name outside `labels` (such as
        "unknown"), sorted, so no prediction is dropped from the matrix.
    A true label outside `labels` is a caller error (ValueError).
    """
    true_arr = np.asarray(list(true), dtype=object)
    pred_arr = np.asarray(list(predicted), dtype=object)
    if true_arr.shape != pred_arr.shape:
        raise ValueError(f"true has {true_arr.size} items, predicted has {pred_arr.size}")
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    index = {name: i for i, name in enumerate(labels)}
    unknown_true = sorted({str(t) for t in true_arr if t not in index})
    if unknown_true:
        raise ValueError(f"true labels not in labels: {unknown_true}")
    extra = sorted({str(p) for p in pred_arr if p not in index})
    columns = labels + extra
    col_index = {name: i for i, name in enumerate(columns)}

    n = int(true_arr.size)
    confusion = np.zeros((len(labels), len(columns)), dtype=np.int64)
    if n:
        rows = np.fromiter((index[t] for t in true_arr), dtype=np.int64, count=n)
        cols = np.fromiter((col_index[p] for p in pred_arr), dtype=np.int64, count=n)
        np.add.at(confusion, (rows, cols), 1)

    k = len(labels)
    tp = np.diag(confusion[:, :k]).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)  # true examples per person
    predicted_as = confusion[:, :k].sum(axis=0).astype(np.float64)  # predictions per person
    correct = int(tp.sum())

    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        f1_denom = support + predicted_as  # = 2TP + FP + FN
        f1 = np.where(f1_denom > 0, 2 * tp / f1_denom, np.nan)
    defined = ~np.isnan(f1)
    macro_f1 = float(f1[defined].mean()) if defined.any() else math.nan
    accuracy = correct / n if n else math.nan
    ci_low, ci_high = wilson_interval(correct, n)
    return {
        "n": n,
        "correct": correct,
        "accuracy": accuracy,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "macro_f1": macro_f1,
        "per_class": {
            name: (None if math.isnan(r) else float(r)) for name, r in zip(labels, recall.tolist())
        },
        "labels": labels,
        "confusion_columns": columns,
        "confusion": confusion.tolist(),
    }


def clean(value: Any) -> Any:
    """NaN -> None, numpy scalars -> Python, recursively (so rows are strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def reference_val_photos(val_sha256: Sequence[str]) -> bool:
    """Whether the validation photos (their SHA-256 digests, rejected ones too) are the reference
    notebook's 25, the only photos its accuracy can be set beside."""
    listing = "\n".join(sorted(val_sha256)).encode()
    return hashlib.sha256(listing).hexdigest() == REFERENCE_VAL_DIGEST


def _null_row(model: str, status: str, reason: str | None, train_seconds: Any,
              references: Mapping[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {key: None for key in ROW_KEYS}
    row.update(
        model=model,
        status=status,
        reason=reason,
        train_seconds=train_seconds,
        reference=references.get(model),
    )
    return row


def accuracy_rows(
    predictions: pa.Table,
    results: list[dict[str, Any]],
    val_rejects: int,
    labels: Sequence[str] | None = None,
    references: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One accuracy row per model, in `results` order, with exactly the keys of `ROW_KEYS`.

    `predictions` has at least the columns `model`, `label` and `predicted` (the
    `reports/predictions.parquet` layout); `results` are the models' `result.json` objects
    (`model`, `status`, `reason`, `train_seconds`); `val_rejects` is the number of validation
    photos rejected in preprocessing; `labels` are the people (default: every true label in
    `predictions`, sorted); `references` the reference notebook's accuracy per model, for
    validation photos that are its own (`reference_val_photos`). Models that are not `ok` get null
    metrics. An `ok` model without a single prediction is reported `failed` (with that reason)
    rather than `ok` with no numbers.
    """
    references = references or {}
    if val_rejects < 0:
        raise ValueError("val_rejects must be >= 0")
    columns = predictions.column_names
    missing = {"model", "label", "predicted"} - set(columns)
    if missing:
        raise ValueError(f"predictions lack columns {sorted(missing)}")
    models = predictions.column("model").to_pylist()
    trues = predictions.column("label").to_pylist()
    preds = predictions.column("predicted").to_pylist()
    if labels is None:
        labels = sorted({str(t) for t in trues})
    labels = list(labels)

    by_model: dict[str, tuple[list[str], list[str]]] = {}
    for model, t, p in zip(models, trues, preds):
        pair = by_model.setdefault(str(model), ([], []))
        pair[0].append(t)
        pair[1].append("" if p is None else p)

    rows: list[dict[str, Any]] = []
    for result in results:
        model = str(result["model"])
        status = str(result.get("status") or Status.FAILED)
        reason = result.get("reason")
        train_seconds = result.get("train_seconds")
        if status != Status.OK:
            rows.append(_null_row(model, status, reason or "no reason given", train_seconds, references))
            continue
        t, p = by_model.get(model, ([], []))
        if not t:
            reason = "trained, but it has no rows in reports/predictions.parquet"
            rows.append(_null_row(model, Status.FAILED.value, reason, train_seconds, references))
            continue
        m = classification_metrics(t, p, labels)
        n_e2e = m["n"] + val_rejects
        row = {
            "model": model,
            "status": Status.OK.value,
            "reason": None,
            "n": m["n"],
            "accuracy": m["accuracy"],
            "ci_low": m["ci_low"],
            "ci_high": m["ci_high"],
            "macro_f1": m["macro_f1"],
            "per_class": m["per_class"],
            "train_seconds": train_seconds,
            "n_end_to_end": n_e2e,
            "accuracy_end_to_end": m["correct"] / n_e2e,
            "reference": references.get(model),
        }
        rows.append(clean(row))
    return [clean({key: row[key] for key in ROW_KEYS}) for row in rows]
