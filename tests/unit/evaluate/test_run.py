"""`faceproc evaluate` on a small real OUT tree: a tiny trained CNN, a val shard, a manifest; real Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from faceproc.config import Config
from faceproc.core import layout, storage
from faceproc.core.errors import one_line_reason
from faceproc.core.layout import shard_name
from faceproc.core.model_names import model_order
from faceproc.core.schema import FACE_SCHEMA, MANIFEST_SCHEMA
from faceproc.evaluate.predictor import PREDICTION_SCHEMA, MultiPredictor
from faceproc.evaluate.run import EvaluateError, run_evaluate
from tests.conftest import train_tiny_cnn

PEOPLE = ["alice", "bob", "carol", "dave"]
RUN = "20260101T000000Z-abc123"


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(160, 160, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def _face_row(path: str, sha: str, label: str, augment_index: int = 0, split: str = "val") -> dict:
    return {
        "image": _png(hash((path, augment_index)) % 10_000),
        "label": label,
        "label_id": PEOPLE.index(label),
        "split": split,
        "source_path": path,
        "source_sha256": sha,
        "box": [10, 12, 90, 100],
        "confidence": 0.99,
        "faces_found": 1,
        "augment_index": augment_index,
        "run_id": RUN,
    }


VAL_PHOTOS = [  # (path, label): five val photos with a face
    ("/data/val/alice/a1.jpg", "alice"),
    ("/data/val/alice/a2.jpg", "alice"),
    ("/data/val/bob/b1.jpg", "bob"),
    ("/data/val/bob/b2.jpg", "bob"),
    ("/data/val/carol/c1.jpg", "carol"),
]
REJECTED_VAL = ("/data/val/carol/c2.jpg", "carol")


def write_out_tree(out: Path) -> None:
    """Val shard + manifest (with one rejected val photo) in the layout preprocessing publishes."""
    rows = [_face_row(path, f"sha-{path}", label) for path, label in VAL_PHOTOS]
    rows.append(_face_row(VAL_PHOTOS[0][0], f"sha-{VAL_PHOTOS[0][0]}", "alice", augment_index=1))  # not evaluated
    rows.append(_face_row("/data/val/bob/b1.jpg", "sha-stale", "bob"))  # content replaced since: not live
    shard = out / "shards" / "val" / shard_name(RUN, 0)
    shard.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=FACE_SCHEMA), shard)
    # a file of a run that never published: must be ignored
    pq.write_table(pa.Table.from_pylist(rows[:1], schema=FACE_SCHEMA), shard.parent / shard_name("deadrun", 0))

    manifest = [
        {"path": p, "sha256": f"sha-{p}", "split": "val", "label": label, "status": "ok", "reason": None,
         "face_rows": 1, "leakage": False, "run_id": RUN, "settings": "margin-0.2"}
        for p, label in VAL_PHOTOS
    ]
    for fingerprint, margin in (("margin-0.2", 0.2), ("margin-0.1", 0.1)):
        storage.write_json_atomic(layout.preprocess_settings(str(out), fingerprint), {"face_margin": margin})
    manifest.append({"path": REJECTED_VAL[0], "sha256": "sha-rej", "split": "val", "label": "carol",
                     "status": "rejected", "reason": "no_face", "face_rows": 0, "leakage": False, "run_id": RUN})
    manifest.append({"path": "/data/train/dave/d1.jpg", "sha256": "sha-train-rej", "split": "train", "label": "dave",
                     "status": "rejected", "reason": "not_an_image", "face_rows": 0, "leakage": False, "run_id": RUN})
    storage.write_table_atomic(str(out / "manifest.parquet"), pa.Table.from_pylist(manifest, schema=MANIFEST_SCHEMA))


def predictor_actors() -> int:
    from ray.util.state import list_actors

    return sum("MultiPredictor" in actor.class_name for actor in list_actors(limit=10_000))


@pytest.fixture(scope="module", params=["driver", "actor"])
def evaluated(request, tmp_path_factory, ray_session):
    """The same evaluation with the faces predicted in the driver and in a Ray Data actor."""
    out = tmp_path_factory.mktemp("evaluate") / "out"
    write_out_tree(out)
    train_tiny_cnn(out / "models" / "cnn", PEOPLE)
    skipped = out / "models" / "resnet50_imagenet"
    skipped.mkdir(parents=True)
    (skipped / "result.json").write_text(json.dumps({
        "model": "resnet50_imagenet", "status": "skipped", "train_seconds": None,
        "reason": "ImageNet weights unavailable: put resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 in ~/.keras/models",
    }))
    broken = out / "models" / "resnet50"  # training said ok, but the file is damaged
    broken.mkdir(parents=True)
    (broken / "model.keras").write_bytes(b"PK\x03\x04 this is not a keras archive")
    (broken / "classes.json").write_text(json.dumps(PEOPLE))
    (broken / "result.json").write_text(json.dumps({"model": "resnet50", "status": "ok", "train_seconds": 2.0}))

    # a model trained on rows cut with another margin than the val rows now have: not evaluated
    shutil.copytree(out / "models" / "cnn", out / "models" / "older_crops")
    (out / "models" / "older_crops" / "result.json").write_text(json.dumps({
        "model": "older_crops", "status": "ok", "train_seconds": 1.0, "row_settings": ["margin-0.1"]}))

    # a model that loads but does not match its classes.json: fails while predicting
    train_tiny_cnn(out / "models" / "mismatch", PEOPLE)
    (out / "models" / "mismatch" / "classes.json").write_text(json.dumps(PEOPLE[:3]))

    config = Config(output=str(out))
    config.evaluate.batch_size = 2  # several batches
    config.evaluate.driver_max_faces = len(VAL_PHOTOS) if request.param == "driver" else len(VAL_PHOTOS) - 1
    actors = predictor_actors()
    rows = run_evaluate(config)
    return out, config, rows, predictor_actors() - actors


def test_predictions_one_row_per_val_face(evaluated):
    out, config, _, actors = evaluated
    # one actor for all models, then one per model after the broken ones failed the pass; none in the driver
    assert (actors > 0) == (config.evaluate.driver_max_faces < len(VAL_PHOTOS))
    table = pq.read_table(out / "reports" / "predictions.parquet")
    assert table.schema.equals(PREDICTION_SCHEMA, check_metadata=False)
    rows = table.to_pylist()
    assert {r["model"] for r in rows} == {"cnn"}  # the failed models left no partial rows
    assert sorted((r["source_path"], r["source_sha256"], r["label"]) for r in rows) == sorted(
        (p, f"sha-{p}", label) for p, label in VAL_PHOTOS
    )
    for r in rows:
        probs = dict(r["probabilities"])
        assert set(probs) == set(PEOPLE)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert r["predicted"] == max(probs, key=probs.get)
        assert r["confidence"] == pytest.approx(max(probs.values()))
    assert [r["source_path"] for r in rows] == sorted(r["source_path"] for r in rows)


def test_accuracy_table(evaluated):
    out, _, returned, _ = evaluated
    acc = json.loads((out / "reports" / "accuracy.json").read_text())
    assert acc == returned
    assert [r["model"] for r in acc] == ["cnn", "resnet50", "resnet50_imagenet", "mismatch", "older_crops"]
    cnn, broken, skipped, mismatch, older = acc

    preds = pq.read_table(out / "reports" / "predictions.parquet").to_pylist()
    correct = sum(r["predicted"] == r["label"] for r in preds)
    assert cnn["status"] == "ok" and cnn["reason"] is None
    assert cnn["n"] == len(VAL_PHOTOS)
    assert cnn["n_end_to_end"] == len(VAL_PHOTOS) + 1  # the rejected val photo; the train reject is not counted
    assert cnn["accuracy"] == pytest.approx(correct / len(VAL_PHOTOS))
    assert cnn["accuracy_end_to_end"] == pytest.approx(correct / (len(VAL_PHOTOS) + 1))
    assert cnn["train_seconds"] == 1.0  # carried over from result.json (train_tiny_cnn writes 1.0)
    assert set(cnn["per_class"]) == set(PEOPLE)
    assert cnn["per_class"]["dave"] is None  # no validation image of dave

    assert broken["status"] == "failed" and broken["n"] is None
    assert broken["reason"].startswith("evaluation failed:")
    assert "\n" not in broken["reason"] and len(broken["reason"]) <= 300
    assert "models/resnet50/model.keras is not a readable .keras archive" in broken["reason"]

    assert mismatch["status"] == "failed" and mismatch["accuracy"] is None
    assert mismatch["reason"].startswith("evaluation failed:")
    assert "\n" not in mismatch["reason"] and len(mismatch["reason"]) <= 300
    assert "the model has 4 outputs but classes.json names 3 people" in mismatch["reason"]

    assert older["status"] == "stale" and older["accuracy"] is None
    assert "other preprocessing settings than the validation faces now hold (face_margin 0.1 -> 0.2)" in older["reason"]
    assert f"faceproc train --output {out} --models older_crops" in older["reason"]

    assert skipped["status"] == "skipped" and skipped["accuracy"] is None
    assert "ImageNet weights unavailable" in skipped["reason"]

    assert (out / "reports" / "accuracy.csv").is_file()
    assert "resnet50_imagenet" in (out / "reports" / "accuracy.md").read_text()


def test_report_and_config_written(evaluated):
    out, config, _, _ = evaluated
    html = (out / "reports" / "report.html").read_text()
    assert "<html" in html and "cnn" in html and "skipped" in html.lower()
    assert json.loads((out / "reports" / "config.json").read_text()) == json.loads(json.dumps(config.to_dict()))
    assert not [p for p in (out / "reports").iterdir() if p.name.startswith(".tmp-")]


def test_predictor_called_directly(tmp_path):
    """The actor class is plain Python: load once, then batches of PNG crops in, rows out."""
    train_tiny_cnn(tmp_path / "models" / "cnn", PEOPLE)
    predictor = MultiPredictor(str(tmp_path), ["cnn"])
    assert predictor.predictors["cnn"].classes == PEOPLE
    batch = {
        "image": np.array([_png(1), _png(2), _png(3)], dtype=object),
        "label": np.array(["alice", "bob", "carol"], dtype=object),
        "source_path": np.array(["/p/1.jpg", "/p/2.jpg", "/p/3.jpg"], dtype=object),
        "source_sha256": np.array(["s1", "s2", "s3"], dtype=object),
    }
    table = predictor(batch)
    assert table.num_rows == 3 and table.schema == PREDICTION_SCHEMA and set(table["model"].to_pylist()) == {"cnn"}
    for row in table.to_pylist():
        probs = dict(row["probabilities"])
        assert list(probs) == PEOPLE
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert row["predicted"] == max(probs, key=probs.get)
    # a crop of another size is resized to the model's input
    small = cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))[1].tobytes()
    assert predictor({**{k: v[:1] for k, v in batch.items()}, "image": np.array([small], dtype=object)}).num_rows == 1
    # an empty batch
    assert predictor({k: v[:0] for k, v in batch.items()}).num_rows == 0


def test_validation_people_no_model_knows_are_named(tmp_path):
    from faceproc.core.manifest import load_manifest, split_files
    from faceproc.evaluate.run import val_people_never_trained

    write_out_tree(tmp_path / "out")
    val_files = split_files(load_manifest(str(tmp_path / "out")), "val")
    assert val_people_never_trained(val_files, set(PEOPLE)) == {}
    assert val_people_never_trained(val_files, {"alice", "dave"}) == {"bob": 2, "carol": 2}  # the rejected c2 too
    assert val_people_never_trained(val_files, set()) == {}  # no usable model: nothing to compare with


def test_errors_say_what_to_run_first(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(EvaluateError, match="faceproc train"):
        run_evaluate(Config(output=str(out)))
    train_tiny_cnn(out / "models" / "cnn", PEOPLE)
    with pytest.raises(EvaluateError, match="faceproc preprocess"):
        run_evaluate(Config(output=str(out)))


def test_model_order_and_one_line_reason():
    assert model_order(["zeta", "facenet", "cnn", "alpha", "resnet50_imagenet", "resnet50"]) == [
        "cnn", "resnet50", "resnet50_imagenet", "facenet", "alpha", "zeta",
    ]
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer\nsecond line") from inner
    except RuntimeError as exc:
        assert one_line_reason(exc) == "KeyError: 'inner'"
    assert one_line_reason(ValueError("a\nb")) == "ValueError: a"


def test_a_model_trained_on_other_people_than_the_train_split_holds_is_stale(tmp_path):
    """It cannot name a newcomer and still names someone removed: scored, it would look merely weak."""
    from faceproc.evaluate.run import stale_reason

    out = str(tmp_path / "out")
    result = {"model": "resnet50", "status": "ok", "classes": ["ann", "bob", "cy"]}
    assert stale_reason(out, result, set(), {"ann", "bob", "cy"}) is None
    assert stale_reason(out, result, set(), {"ann", "bob", "dee"}) == (
        "trained on other people than the train split now holds (+dee, -cy): not evaluated; "
        f"`faceproc train --output {out} --models resnet50` retrains it")
    assert stale_reason(out, {"model": "cnn", "status": "ok"}, set(), {"ann"}) is None  # an earlier faceproc's
