"""A model folder written and read back through `ModelArtifact`, on real files and real Keras models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceproc.core import layout, storage
from faceproc.inference import artifact as artifact_module
from faceproc.inference.artifact import JUST_SAVED_LIMIT, ModelArtifact, TrainedFiles, release_saved_models

CLASSES = ["alice", "bob"]


def _facenet_style_model():
    """Input -> sub-model "facenet" -> head, like a frozen FaceNet's saved classifier, but small."""
    from faceproc.models.facenet import attach_head, build_embedding_head
    from faceproc.models.keras_env import keras

    inputs = keras.Input(shape=(160, 160, 3), dtype="float32", name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    backbone = keras.Model(inputs, keras.layers.Dense(128, name="embed")(pooled), name="facenet")
    return attach_head(backbone, build_embedding_head(len(CLASSES)))


def _cnn():
    from faceproc.models.cnn import build_cnn

    return build_cnn(len(CLASSES), image_size=32)


def _save(out: str, name: str, model) -> None:
    ModelArtifact(out, name).save({"model": name, "status": "ok", "reason": None}, {}, TrainedFiles(model, CLASSES, {}))


@pytest.mark.parametrize("build", [_cnn, _facenet_style_model], ids=["cnn", "facenet"])
def test_the_model_just_saved_is_handed_once_to_the_next_load_and_predicts_as_the_file_does(tmp_path, build):
    out = str(tmp_path / "out")
    model = build()
    _save(out, "m", model)

    first = ModelArtifact(out, "m").load(open_set=False)
    again = ModelArtifact(out, "m").load(open_set=False)
    assert first.model is model  # not read back
    assert again.model is not model  # read from model.keras: an entry is handed out once
    faces = list(np.random.default_rng(0).integers(0, 256, (3, 160, 160, 3), dtype=np.uint8))
    np.testing.assert_allclose(first.probabilities(faces), again.probabilities(faces), rtol=1e-5, atol=1e-6)


def test_a_folder_replaced_since_is_read_from_its_file(tmp_path):
    out = str(tmp_path / "out")
    model = _cnn()
    _save(out, "m", model)
    result_file = ModelArtifact(out, "m").file(layout.RESULT_FILE)
    saved = storage.read_json(result_file)
    storage.write_json_atomic(result_file, {**saved, "model_version": "another-run"})  # as another process would

    assert ModelArtifact(out, "m").load(open_set=False).model is not model


def test_a_process_that_does_not_evaluate_holds_only_the_latest_models(tmp_path):
    models = []
    for index in range(JUST_SAVED_LIMIT + 1):
        models.append(_cnn())
        _save(str(tmp_path / f"out{index}"), "m", models[-1])
    assert len(artifact_module._just_saved) == JUST_SAVED_LIMIT
    assert ModelArtifact(str(tmp_path / "out0"), "m").load(open_set=False).model is not models[0]
    last = str(tmp_path / f"out{JUST_SAVED_LIMIT}")
    assert ModelArtifact(last, "m").load(open_set=False).model is models[-1]
    assert json.loads((tmp_path / "out0" / "models" / "m" / "classes.json").read_text()) == CLASSES


def test_released_models_are_read_from_their_files_and_other_outputs_keep_theirs(tmp_path):
    kept, released = _cnn(), _cnn()
    _save(str(tmp_path / "kept"), "m", kept)
    _save(str(tmp_path / "released"), "m", released)
    release_saved_models(str(tmp_path / "released"))
    assert ModelArtifact(str(tmp_path / "released"), "m").load(open_set=False).model is not released
    assert ModelArtifact(str(tmp_path / "kept"), "m").load(open_set=False).model is kept


@pytest.mark.parametrize("name", [layout.RESULT_FILE, layout.CENTROIDS_FILE])
def test_an_unreadable_json_file_of_a_model_is_one_artifact_error(tmp_path, name):
    """A hand-edited or truncated file stops the model in one line naming the file, not a traceback."""
    from faceproc.inference.artifact import ArtifactError

    folder = tmp_path / "out" / layout.MODELS_DIR / "facenet"
    folder.mkdir(parents=True)
    (folder / layout.RESULT_FILE).write_text(json.dumps({"model": "facenet", "status": "ok"}))
    (folder / name).write_text('{"status": "ok", ')
    (folder / layout.MODEL_FILE).write_bytes(b"PK")
    artifact = ModelArtifact(str(tmp_path / "out"), "facenet")
    with pytest.raises(ArtifactError, match=f"{name} cannot be read: JSONDecodeError"):
        artifact.check_usable() if name == layout.RESULT_FILE else artifact.open_set()
    if name == layout.RESULT_FILE:
        assert artifact.saved_result() is None  # no usable model: training starts afresh, not a traceback


def test_a_restamp_keeps_the_model_and_its_version_and_records_the_new_inputs(tmp_path):
    """A warm start that kept the current weights: identify's results, keyed by version, stand."""
    out = str(tmp_path / "out")
    _save(out, "cnn", _cnn())
    artifact = ModelArtifact(out, "cnn")
    before = artifact.saved_result()
    weights = (tmp_path / "out" / layout.MODELS_DIR / "cnn" / layout.MODEL_FILE).read_bytes()
    artifact.restamp({"model": "cnn", "status": "ok", "reason": None, "fingerprint": "new"}, {"seed": 1})
    after = ModelArtifact(out, "cnn")
    assert after.saved_result()["fingerprint"] == "new"
    assert after.saved_result()["model_version"] == before["model_version"] is not None
    assert (tmp_path / "out" / layout.MODELS_DIR / "cnn" / layout.MODEL_FILE).read_bytes() == weights
    assert json.loads((tmp_path / "out" / layout.MODELS_DIR / "cnn" / layout.CONFIG_FILE).read_text()) == {"seed": 1}
