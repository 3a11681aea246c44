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
WEIGHTS = "ab" * 32  # the SHA-256 of the FaceNet weights a frozen FaceNet was trained on


def _facenet_style_model():
    """Input -> sub-model "facenet" -> head, like a frozen FaceNet's saved classifier, but small."""
    from faceproc.models.facenet import attach_head, build_embedding_head
    from faceproc.models.keras_env import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(160, 160, 3), dtype="float32", name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    backbone = keras.Model(inputs, keras.layers.Dense(128, name="embed")(pooled), name="facenet")
    return attach_head(backbone, build_embedding_head(len(CLASSES)))


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> str:
    """OUT holding a frozen FaceNet-style model with centroids from its own embeddings of random crops."""
    out = str(tmp_path_factory.mktemp("rename") / "out")
    model = _facenet_style_model()
    crops = np.random.default_rng(1).integers(0, 256, (8, 160, 160, 3)).astype(np.float32)
    embeddings = model.get_layer("facenet")(crops).numpy()
    centroids = compute_centroids(embeddings, CLASSES * 4, unknown_far=0.5)
    result = {"model": "facenet", "status": "ok", "reason": None,
              "inputs": {"facenet_mode": "frozen", "facenet_weights": WEIGHTS}}
    ModelArtifact(out, "facenet").save(result, {}, TrainedFiles(model, CLASSES, {}, centroids))
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


def test_a_face_with_the_same_weights_embedding_is_named_from_it_the_others_from_their_crop(out):
    artifact = ModelArtifact(out, "facenet")
    assert artifact.embedder() == WEIGHTS
    classifier = artifact.load()
    rng = np.random.default_rng(2)
    crops = [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(4)]
    own = classifier.classify(crops, with_embeddings=True)
    # row 0 stores the embedding of crop 3, not of its own crop: named from what is stored, not from the crop
    rows = _rows(crops, [own[3]["embedding"], own[1]["embedding"], own[2]["embedding"], None],
                 [WEIGHTS, "cd" * 32, WEIGHTS, None])
    assert reusable_embeddings(rows, WEIGHTS).tolist() == [True, False, True, False]

    renamed = RenameFaces(out, "facenet", "v2", "r2", _keys(rows))(rows).to_pylist()

    assert [r["distance"] for r in renamed] == pytest.approx([own[i]["distance"] for i in (3, 1, 2, 3)], abs=1e-5)
    assert [r["person"] for r in renamed] == [own[i]["person"] for i in (3, 1, 2, 3)]
    assert [r["embedder"] for r in renamed] == [WEIGHTS] * 4  # the others now hold this backbone's embedding
    np.testing.assert_allclose(renamed[1]["embedding"], own[1]["embedding"], atol=1e-5)
    np.testing.assert_allclose(renamed[3]["embedding"], own[3]["embedding"], atol=1e-5)
    assert renamed[0]["embedding"] == pytest.approx(own[3]["embedding"].tolist())  # kept as stored
    assert {(r["model_version"], r["run_id"]) for r in renamed} == {("v2", "r2")}
    assert [decode_png(r["face"]).tobytes() for r in renamed] == [crop.tobytes() for crop in crops]


def test_a_fine_tuned_backbone_names_every_face_from_its_crop_and_rows_of_other_photos_are_dropped(out, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    result = ModelArtifact(str(copy), "facenet").file(layout.RESULT_FILE)
    saved = storage.read_json(result)
    storage.write_json_atomic(result, {**saved, "inputs": {**saved["inputs"], "facenet_mode": "finetune"}})
    classifier = ModelArtifact(str(copy), "facenet").load()
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (160, 160, 3), dtype=np.uint8) for _ in range(3)]
    own = classifier.classify(crops, with_embeddings=True)
    rows = _rows(crops, [own[2]["embedding"]] * 3, [WEIGHTS] * 3)  # embeddings this backbone would not make

    renamed = RenameFaces(str(copy), "facenet", "v2", "r2", _keys(rows.slice(0, 2)))(rows).to_pylist()

    assert [r["photo_path"] for r in renamed] == ["/p/0.jpg", "/p/1.jpg"]
    assert [r["distance"] for r in renamed] == pytest.approx([own[0]["distance"], own[1]["distance"]], abs=1e-5)
    assert [r["embedder"] for r in renamed] == [None, None]  # a fine-tuned backbone shares its embeddings with none
