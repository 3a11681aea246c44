"""Naming stored identity rows again with a new model version, on a small real Keras model (no Ray)."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest

from faceproc.core import layout, storage
from faceproc.core.images import decode_png, encode_png
from faceproc.core.schema import IDENTITY_SCHEMA
from faceproc.core.shards import live_key_array
from faceproc.identify.rename import RenameFaces, reusable_embeddings
from faceproc.inference.artifact import ModelArtifact, TrainedFiles
from faceproc.inference.openset import compute_centroids

CLASSES = ["alice", "bob"]


def _facenet_style_model():
    """(backbone "facenet" -> head classifier, head), like a frozen FaceNet's, but small."""
    from faceproc.models.facenet import attach_head, build_embedding_head
    from faceproc.models.keras_env import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(160, 160, 3), dtype="float32", name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    backbone = keras.Model(inputs, keras.layers.Dense(128, name="embed")(pooled), name="facenet")
    head = build_embedding_head(len(CLASSES))
    return attach_head(backbone, head), head


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> str:
    """OUT holding a frozen FaceNet-style model, its head alone and centroids from its own embeddings,
    with the fingerprint of its backbone recorded as training records it."""
    from faceproc.models.facenet_weights import backbone_fingerprint

    out = str(tmp_path_factory.mktemp("rename") / "out")
    model, head = _facenet_style_model()
    crops = np.random.default_rng(1).integers(0, 256, (8, 160, 160, 3)).astype(np.float32)
    embeddings = model.get_layer("facenet")(crops).numpy()
    centroids = compute_centroids(embeddings, CLASSES * 4, unknown_far=0.5)
    result = {"model": "facenet", "status": "ok", "reason": None,
              "embedder": backbone_fingerprint(model.get_layer("facenet"))}
    ModelArtifact(out, "facenet").save(result, {}, TrainedFiles(model, CLASSES, {}, centroids, head=head))
    return out


def _rows(crops: list[np.ndarray], embeddings: list[np.ndarray | None], embedders: list[str | None]) -> pa.Table:
    rows = [{"photo_path": f"/p/{i}.jpg", "photo_sha256": f"sha{i}", "face_index": 0, "faces_in_photo": 1,
             "box": [0, 0, 10, 10], "keypoints": [1.0] * 10, "confidence": 0.99, "aligned": True,
             "person": "old", "probability": 0.5, "distance": 9.0,
             "embedding": None if embedding is None else embedding.tolist(), "embedder": embedder,
             "model": "facenet", "model_version": "v1", "face": encode_png(crop), "run_id": "r1"}
            for i, (crop, embedding, embedder) in enumerate(zip(crops, embeddings, embedders))]
    return pa.Table.from_pylist(rows, schema=IDENTITY_SCHEMA)


def _keys(rows: pa.Table) -> pa.Array:
    manifest = pa.table({"path": rows["photo_path"], "sha256": rows["photo_sha256"], "run_id": rows["run_id"],
                         "status": ["ok"] * rows.num_rows})
    return live_key_array(manifest, with_run=True)


def _crops(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(count)]


def test_the_fingerprint_is_of_the_backbone_weights():
    from faceproc.models.facenet_weights import backbone_fingerprint

    model, _ = _facenet_style_model()
    again, _ = _facenet_style_model()  # same seed: same weights, another model object
    backbone = model.get_layer("facenet")
    assert backbone_fingerprint(backbone) == backbone_fingerprint(again.get_layer("facenet"))
    weights = backbone.get_weights()
    weights[-1] = weights[-1] + 1e-6
    backbone.set_weights(weights)
    assert backbone_fingerprint(backbone) != backbone_fingerprint(again.get_layer("facenet"))


def test_faces_with_the_backbones_embedding_are_named_by_the_head_alone_the_others_from_their_crop(out):
    artifact = ModelArtifact(out, "facenet")
    embedder = artifact.embedder()
    assert embedder == artifact.result()["embedder"]
    crops = _crops(2, 4)
    own = artifact.load().classify(crops, with_embeddings=True)
    # rows 0 and 2 hold this backbone's embeddings (row 0 of crop 3's, not its own): they are named from them
    stored = _rows(crops[:1] + crops[2:3], [own[3]["embedding"], own[2]["embedding"]], [embedder] * 2)
    rename = RenameFaces(out, "facenet", "v2", "r2", _keys(stored))
    head_only = rename(stored).to_pylist()
    assert rename.whole_model is None  # FaceNet not even loaded
    assert [r["distance"] for r in head_only] == pytest.approx([own[3]["distance"], own[2]["distance"]], abs=1e-5)
    assert head_only[0]["embedding"] == pytest.approx(own[3]["embedding"].tolist())  # kept as stored

    other = _rows(crops, [own[3]["embedding"], own[1]["embedding"], own[2]["embedding"], None],
                  [embedder, "cd" * 32, embedder, None])  # row 1: another backbone's; row 3: an earlier faceproc's
    assert reusable_embeddings(other, embedder).tolist() == [True, False, True, False]
    renamed = RenameFaces(out, "facenet", "v2", "r2", _keys(other))(other).to_pylist()
    assert [r["distance"] for r in renamed] == pytest.approx([own[i]["distance"] for i in (3, 1, 2, 3)], abs=1e-5)
    assert [r["person"] for r in renamed] == [own[i]["person"] for i in (3, 1, 2, 3)]
    assert [r["embedder"] for r in renamed] == [embedder] * 4  # the others now hold this backbone's embedding
    np.testing.assert_allclose(renamed[1]["embedding"], own[1]["embedding"], atol=1e-5)
    np.testing.assert_allclose(renamed[3]["embedding"], own[3]["embedding"], atol=1e-5)
    assert {(r["model_version"], r["run_id"]) for r in renamed} == {("v2", "r2")}
    assert [decode_png(r["face"]).tobytes() for r in renamed] == [crop.tobytes() for crop in crops]


@pytest.mark.parametrize("lost", [layout.HEAD_FILE, "embedder"], ids=["no-head-file", "no-recorded-embedder"])
def test_without_its_head_file_or_recorded_backbone_every_face_is_named_from_its_crop(out, tmp_path, lost):
    """A model saved by an earlier faceproc (or a fine-tuned FaceNet) names nothing from stored embeddings,
    and rows of photos not being renamed are dropped."""
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    artifact = ModelArtifact(str(copy), "facenet")
    embedder = artifact.embedder()
    if lost == layout.HEAD_FILE:
        storage.delete_file(artifact.file(layout.HEAD_FILE))
    else:
        saved = artifact.result()
        storage.write_json_atomic(artifact.file(layout.RESULT_FILE), {k: v for k, v in saved.items() if k != lost})
    assert ModelArtifact(str(copy), "facenet").embedder() is None
    crops = _crops(3, 3)
    own = artifact.load().classify(crops, with_embeddings=True)
    rows = _rows(crops, [own[2]["embedding"]] * 3, [embedder] * 3)  # embeddings of crop 2 for all three

    renamed = RenameFaces(str(copy), "facenet", "v2", "r2", _keys(rows.slice(0, 2)))(rows).to_pylist()

    assert [r["photo_path"] for r in renamed] == ["/p/0.jpg", "/p/1.jpg"]
    assert [r["distance"] for r in renamed] == pytest.approx([own[0]["distance"], own[1]["distance"]], abs=1e-5)
    assert [r["embedder"] for r in renamed] == [None, None]  # its backbone is not known to be anyone's


def test_the_driver_writes_full_shards_and_every_renamed_face_once(out, tmp_path, monkeypatch):
    """Four photos of three faces each, renamed in the driver into shards of 4 rows: three full files."""
    import pyarrow.parquet as pq

    from faceproc.config import PreprocessConfig
    from faceproc.core.schema import MANIFEST_SCHEMA
    from faceproc.identify.rename import stage_renames

    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # a driver on its own: no Ray to join or start
    artifact = ModelArtifact(out, "facenet")
    crops = _crops(4, 3)
    own = artifact.load().classify(crops, with_embeddings=True)
    root, manifest = str(tmp_path / "ids"), []
    for photo in range(4):
        run = f"2026010{photo}T000000Z-r{photo}"
        rows = _rows(crops, [v["embedding"] for v in own], [artifact.embedder()] * 3).to_pylist()
        rows = [{**row, "photo_path": f"/p/{photo}.jpg", "photo_sha256": f"sha{photo}", "face_index": i,
                 "faces_in_photo": 3, "run_id": run} for i, row in enumerate(rows)]
        storage.write_table_atomic(f"{root}/shards/{run}.00000.parquet", pa.Table.from_pylist(rows, IDENTITY_SCHEMA))
        manifest.append({"path": f"/p/{photo}.jpg", "sha256": f"sha{photo}", "split": None, "label": None,
                         "status": "ok", "reason": None, "face_rows": 3, "leakage": False, "run_id": run,
                         "settings": "c/v1", "size": 1, "mtime_ns": 1})
    staged = tmp_path / "renamed"

    where = stage_renames(pa.Table.from_pylist(manifest, MANIFEST_SCHEMA), 0, root, PreprocessConfig(rows_per_shard=4),
                          str(staged), None, {}, out=out, model="facenet", version="v2", run_id="r9")

    assert where == "the driver"
    files = [pq.read_table(path) for path in sorted(staged.glob("*.parquet"))]
    assert sorted(table.num_rows for table in files) == [4, 4, 4]
    renamed = pa.concat_tables(files).to_pylist()
    assert sorted((r["photo_path"], r["face_index"]) for r in renamed) == [(f"/p/{p}.jpg", i) for p in range(4)
                                                                           for i in range(3)]
    assert {r["model_version"] for r in renamed} == {"v2"}
