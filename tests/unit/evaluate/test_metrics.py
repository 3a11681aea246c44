"""Accuracy metrics and the accuracy table writers, on hand-worked examples and real files."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math

import pyarrow as pa
import pytest

from faceproc.core import storage
from faceproc.core.model_names import REFERENCE_ACCURACY
from faceproc.evaluate.metrics import ROW_KEYS, accuracy_rows, classification_metrics, wilson_interval
from faceproc.evaluate.tables import format_table, write_accuracy
from tests.conftest import DATASET

Z = 1.959964


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval written out from the textbook formula."""
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return centre - half, centre + half


# --- Wilson interval ------------------------------------------------------------------------


def test_wilson_all_correct_of_25():
    low, high = wilson_interval(25, 25)
    # 25/25: centre = (1 + z²/50) / (1 + z²/25), half = z/(1 + z²/25) * sqrt(z²/2500)
    z2 = Z * Z
    expected_low = (1 + z2 / 50) / (1 + z2 / 25) - (Z / (1 + z2 / 25)) * math.sqrt(z2 / 2500)
    assert low == pytest.approx(expected_low, abs=1e-12)
    assert low == pytest.approx(0.8668, abs=1e-4)
    assert high == pytest.approx(1.0, abs=1e-12)


def test_wilson_20_of_25():
    low, high = wilson_interval(20, 25)
    exp_low, exp_high = wilson_by_hand(20, 25)
    assert (low, high) == pytest.approx((exp_low, exp_high), abs=1e-12)
    assert low == pytest.approx(0.609, abs=1e-3)
    assert high == pytest.approx(0.911, abs=1e-3)


@pytest.mark.parametrize("k,n", [(0, 25), (1, 1), (12, 25), (24, 25), (7, 118)])
def test_wilson_matches_formula_and_contains_estimate(k, n):
    low, high = wilson_interval(k, n)
    exp_low, exp_high = wilson_by_hand(k, n)
    assert low == pytest.approx(max(0.0, exp_low), abs=1e-12)
    assert high == pytest.approx(min(1.0, exp_high), abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_zero_trials_is_nan_and_bad_input_raises():
    low, high = wilson_interval(0, 0)
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(-1, 2)


# --- classification metrics -----------------------------------------------------------------

TRUE = ["a", "a", "a", "b", "b", "c"]
PRED = ["a", "a", "b", "b", "c", "c"]


def test_macro_f1_recall_and_confusion_hand_worked():
    m = classification_metrics(TRUE, PRED, ["a", "b", "c"])
    # a: TP 2, FP 0, FN 1 -> F1 = 4/5; b: TP 1, FP 1, FN 1 -> 2/4; c: TP 1, FP 1, FN 0 -> 2/3
    assert m["macro_f1"] == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)
    assert m["per_class"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0})
    assert m["n"] == 6 and m["correct"] == 4
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert (m["ci_low"], m["ci_high"]) == pytest.approx(wilson_by_hand(4, 6))
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["confusion_columns"] == ["a", "b", "c"]


def test_absent_person_and_prediction_outside_labels():
    m = classification_metrics(["a", "b", "b"], ["a", "unknown", "b"], ["a", "b", "d"])
    # d has neither truth nor predictions: no recall, left out of macro F1.
    assert m["per_class"] == {"a": 1.0, "b": 0.5, "d": None}
    # a: F1 1; b: TP 1, FN 1, FP 0 -> 2/3
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["confusion_columns"] == ["a", "b", "d", "unknown"]
    assert m["confusion"] == [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]]
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_empty_and_invalid_inputs():
    m = classification_metrics([], [], ["a"])
    assert m["n"] == 0 and math.isnan(m["accuracy"]) and math.isnan(m["macro_f1"])
    with pytest.raises(ValueError):
        classification_metrics(["a"], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError):
        classification_metrics(["z"], ["a"], ["a"])


# --- accuracy rows ---------------------------------------------------------------------------


def predictions_table() -> pa.Table:
    rows = []
    for model, preds in (("cnn", PRED), ("facenet", TRUE)):
        for i, (t, p) in enumerate(zip(TRUE, preds)):
            rows.append({"model": model, "source_path": f"/v/{t}/{i}.jpg", "label": t, "predicted": p})
    return pa.Table.from_pylist(rows)


RESULTS = [
    {"model": "cnn", "status": "ok", "reason": None, "train_seconds": 12.5},
    {
        "model": "resnet50_imagenet",
        "status": "skipped",
        "reason": "no ImageNet weights: put them in models/x.h5",
        "train_seconds": None,
    },
    {"model": "facenet", "status": "ok", "train_seconds": 3.0},
]


def test_accuracy_rows_end_to_end_and_reference():
    rows = accuracy_rows(predictions_table(), RESULTS, val_rejects=2, labels=["a", "b", "c"],
                         references=REFERENCE_ACCURACY)
    assert [r["model"] for r in rows] == ["cnn", "resnet50_imagenet", "facenet"]
    for r in rows:
        assert tuple(r) == ROW_KEYS
    cnn, skipped, facenet = rows
    assert cnn["status"] == "ok" and cnn["reason"] is None
    assert cnn["n"] == 6 and cnn["accuracy"] == pytest.approx(4 / 6)
    assert cnn["n_end_to_end"] == 8
    assert cnn["accuracy_end_to_end"] == pytest.approx(4 / 8)  # 2 rejected val photos count as errors
    assert cnn["train_seconds"] == 12.5
    assert cnn["reference"] == REFERENCE_ACCURACY["cnn"] == 0.60
    assert facenet["accuracy"] == 1.0 and facenet["accuracy_end_to_end"] == pytest.approx(6 / 8)
    assert facenet["reference"] == 0.96
    assert skipped["status"] == "skipped" and "ImageNet" in skipped["reason"]
    for key in (
        "n",
        "accuracy",
        "ci_low",
        "ci_high",
        "macro_f1",
        "per_class",
        "n_end_to_end",
        "accuracy_end_to_end",
    ):
        assert skipped[key] is None
    assert skipped["reference"] == 0.56
    json.dumps(rows, allow_nan=False)  # strict JSON


@pytest.mark.skipif(not DATASET.is_dir(), reason="dataset not fetched (run `faceproc fetch-data`)")
def test_the_notebooks_numbers_only_beside_its_own_validation_photos():
    from faceproc.evaluate.metrics import reference_val_photos

    fetched = [hashlib.sha256(path.read_bytes()).hexdigest() for path in (DATASET / "val").glob("*/*")]
    assert len(fetched) == 25 and reference_val_photos(fetched)
    assert not reference_val_photos(fetched[:-1]) and not reference_val_photos([*fetched, "0" * 64])
    rows = accuracy_rows(predictions_table(), RESULTS, val_rejects=2, labels=["a", "b", "c"])  # other photos
    assert [row["reference"] for row in rows] == [None, None, None]


def test_ok_model_without_predictions_is_failed_not_silent():
    rows = accuracy_rows(predictions_table(), [{"model": "resnet50", "status": "ok"}], 0)
    assert rows[0]["status"] == "failed" and rows[0]["accuracy"] is None and rows[0]["reason"]


# --- writers ---------------------------------------------------------------------------------


def test_write_accuracy_files_parse(tmp_path):
    rows = accuracy_rows(predictions_table(), RESULTS, val_rejects=2, labels=["a", "b", "c"],
                         references=REFERENCE_ACCURACY)
    out = str(tmp_path / "out")
    written = write_accuracy(out, rows)
    assert sorted(p.rsplit("/", 1)[1] for p in written) == ["accuracy.csv", "accuracy.json", "accuracy.md"]

    loaded = json.loads((tmp_path / "out/reports/accuracy.json").read_text())
    assert loaded == rows
    assert storage.read_json(f"{out}/reports/accuracy.json")[0]["model"] == "cnn"

    table = list(csv.DictReader(io.StringIO((tmp_path / "out/reports/accuracy.csv").read_text())))
    assert [r["model"] for r in table] == ["cnn", "resnet50_imagenet", "facenet"]
    assert float(table[0]["accuracy"]) == pytest.approx(4 / 6)
    assert float(table[0]["recall_b"]) == pytest.approx(0.5)
    assert float(table[0]["accuracy_end_to_end"]) == pytest.approx(0.5)
    assert table[1]["accuracy"] == "" and table[1]["status"] == "skipped"
    assert "per_class" not in table[0]

    md = (tmp_path / "out/reports/accuracy.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3  # header, rule, one line per model
    cnn_line = next(line for line in lines if line.startswith("| cnn "))
    assert "0.667 [" in cnn_line and "0.500 (4/8)" in cnn_line and "0.60" in cnn_line
    assert "| skipped |" in md
    assert "no ImageNet weights" in md  # the reason is shown
    assert not list((tmp_path / "out/reports").glob(".tmp-*"))  # atomic writes leave nothing behind


def test_format_table_plain_text():
    rows = accuracy_rows(predictions_table(), RESULTS, val_rejects=2, labels=["a", "b", "c"])
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[0] == "model"
    assert any(line.startswith("facenet") and "1.000" in line for line in lines)
    assert "resnet50_imagenet skipped: no ImageNet weights" in text
    assert "|" not in lines[0]
    assert format_table([]).count("no models") == 1
