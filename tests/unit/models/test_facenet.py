"""FaceNet rebuilt from facenet_keras.h5 without running anything stored in it, and its classifier.

Needs ``models/facenet_keras.h5`` (``faceproc fetch-data``); the real-crop test also needs the
fetched photos and is marked slow. The backbone is loaded once for the module.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from faceproc.models import WeightsError, WeightsUnavailable
from faceproc.models.facenet import (
    EMBEDDING_DIM,
    FACENET_PARAMS,
    attach_head,
    build_embedding_head,
    build_facenet_classifier,
)
from faceproc.models.facenet_weights import load_facenet_backbone
from faceproc.models.keras_env import keras
from faceproc.models.layers import ScaledResidual
from faceproc.models.saving import load_model
from tests.conftest import DATASET, FACENET_WEIGHTS

TRAIN_DIR = DATASET / "train"
NUM_CLASSES = 3

pytestmark = pytest.mark.skipif(
    not FACENET_WEIGHTS.is_file(), reason=f"{FACENET_WEIGHTS} missing: run `faceproc fetch-data`"
)


@pytest.fixture(scope="module")
def backbone() -> keras.Model:
    return load_facenet_backbone(str(FACENET_WEIGHTS))


@pytest.fixture(scope="module")
def file_config() -> dict:
    """The architecture the Keras 2 file itself describes (its ``model_config``), read apart from faceproc."""
    with h5py.File(FACENET_WEIGHTS, "r") as f:
        return json.loads(f.attrs["model_config"])


def _images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, size=(n, 160, 160, 3)).astype("float32")


def _write_config_only(path: Path, config: dict) -> str:
    """An HDF5 model file holding only a model_config attribute (and an empty weights group)."""
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = json.dumps(config)
        f.create_group("model_weights")
    return str(path)


# --- the rebuilt network --------------------------------------------------------------------


def test_parameter_count_and_shapes(backbone):
    assert backbone.count_params() == FACENET_PARAMS == 22_808_144
    assert backbone.input_shape == (None, 160, 160, 3)
    assert backbone.output_shape == (None, EMBEDDING_DIM)


def test_every_lambda_became_a_scaled_residual(backbone, file_config):
    lambdas = {
        layer["name"]: layer["config"]["arguments"]["scale"]
        for layer in file_config["config"]["layers"]
        if layer["class_name"] == "Lambda"
    }
    inception = backbone.get_layer("inception_resnet_v1")
    residuals = {layer.name: layer.scale for layer in inception.layers if isinstance(layer, ScaledResidual)}
    assert len(lambdas) == 21
    assert residuals == pytest.approx(lambdas)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in inception.layers)


def test_weights_are_the_files(backbone):
    inception = backbone.get_layer("inception_resnet_v1")
    with h5py.File(FACENET_WEIGHTS, "r") as f:
        for layer_name in ("Conv2d_1a_3x3", "Block17_5_Conv2d_1x1", "Bottleneck", "Bottleneck_BatchNorm"):
            group = f["model_weights"][layer_name]
            stored = [np.asarray(group[n]) for n in group.attrs["weight_names"]]
            for got, want in zip(inception.get_layer(layer_name).get_weights(), stored):
                np.testing.assert_array_equal(got, want)


def test_embedding_is_deterministic(backbone):
    crop = _images(1, seed=5)
    first = backbone.predict(crop, verbose=0)
    second = backbone.predict(np.concatenate([_images(1, seed=6), crop]), verbose=0)[1:]
    assert first.shape == (1, EMBEDDING_DIM)
    assert np.isfinite(first).all()
    np.testing.assert_allclose(second, first, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(backbone.predict(crop, verbose=0), first)


def test_embedding_ignores_brightness_and_contrast(backbone):
    # per-image standardisation is in the graph: an affine change of pixel values changes nothing
    crop = _images(1, seed=7) * 0.5 + 40.0
    np.testing.assert_allclose(
        backbone.predict(crop * 1.5 + 10.0, verbose=0), backbone.predict(crop, verbose=0), rtol=1e-3, atol=1e-3
    )


# --- errors ---------------------------------------------------------------------------------


def test_missing_file_says_fetch_data(tmp_path):
    with pytest.raises(WeightsUnavailable, match=f"faceproc fetch-data --models-dir {tmp_path}`, or point models_dir"):
        load_facenet_backbone(str(tmp_path / "facenet_keras.h5"))
    with pytest.raises(WeightsUnavailable, match="do not exist: point models_dir") as other_name:
        load_facenet_backbone(str(tmp_path / "my_facenet.h5"))  # fetch-data would not make this file
    assert "fetch-data" not in str(other_name.value)


def test_random_bytes_are_a_weights_error(tmp_path):
    corrupt = tmp_path / "facenet_keras.h5"
    corrupt.write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    with pytest.raises(WeightsError) as info:
        load_facenet_backbone(str(corrupt))
    assert "\n" not in str(info.value)
    assert "HDF5" in str(info.value)


def test_truncated_file_is_a_weights_error(tmp_path):
    truncated = tmp_path / "facenet_keras.h5"
    with open(FACENET_WEIGHTS, "rb") as src:
        truncated.write_bytes(src.read(2 * 1024 * 1024))
    with pytest.raises(WeightsError) as info:
        load_facenet_backbone(str(truncated))
    assert "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_another_keras_model_is_a_weights_error(tmp_path):
    inputs = keras.Input((160, 160, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(inputs))
    other = tmp_path / "other.h5"
    keras.Model(inputs, outputs).save(str(other))
    with pytest.raises(WeightsError, match="no 'Bottleneck' layer"):
        load_facenet_backbone(str(other))

    sequential = tmp_path / "sequential.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(str(sequential))
    with pytest.raises(WeightsError, match="'Sequential'"):
        load_facenet_backbone(str(sequential))

    weights_only = tmp_path / "weights_only.h5"
    keras.Model(inputs, outputs).save_weights(str(weights_only))
    with pytest.raises(WeightsError, match="no model_config"):
        load_facenet_backbone(str(weights_only))


def test_changed_architecture_names_the_parameter_count(tmp_path, file_config):
    config = json.loads(json.dumps(file_config))
    for layer in config["config"]["layers"]:
        if layer["name"] == "Conv2d_1a_3x3":
            layer["config"]["filters"] = 16
    with pytest.raises(WeightsError, match="parameters, expected 22,808,144"):
        load_facenet_backbone(_write_config_only(tmp_path / "narrow.h5", config))


def test_lambda_that_is_not_a_scaled_sum_is_refused(tmp_path, file_config):
    config = json.loads(json.dumps(file_config))
    for layer in config["config"]["layers"]:
        if layer["name"] == "Block35_1_ScaleSum":
            layer["config"]["arguments"] = {"scale": 0.17, "payload": "import os"}
    with pytest.raises(WeightsError, match="Block35_1_ScaleSum"):
        load_facenet_backbone(_write_config_only(tmp_path / "odd_lambda.h5", config))


def test_missing_layer_weights_are_named(tmp_path):
    damaged = tmp_path / "facenet_keras.h5"
    shutil.copyfile(FACENET_WEIGHTS, damaged)
    with h5py.File(damaged, "a") as f:
        del f["model_weights"]["Block8_3_Conv2d_1x1"]
    with pytest.raises(WeightsError, match="Block8_3_Conv2d_1x1"):
        load_facenet_backbone(str(damaged))


# --- the classifier -------------------------------------------------------------------------


def test_frozen_classifier_trains_only_the_head(backbone):
    model = build_facenet_classifier(backbone, NUM_CLASSES, trainable_backbone=False)
    assert model.count_params() == FACENET_PARAMS + EMBEDDING_DIM * NUM_CLASSES + NUM_CLASSES
    assert len(model.trainable_weights) == 2  # the head's kernel and bias
    x = _images(2, seed=8)
    y = keras.utils.to_categorical([0, 2], NUM_CLASSES)
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (2, NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    backbone_before = [w.copy() for w in backbone.get_weights()]
    head_before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(not np.array_equal(a, b.numpy()) for a, b in zip(head_before, model.trainable_weights))
    for before, after in zip(backbone_before, backbone.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_head_trained_on_embeddings_is_the_saved_models_head(backbone, tmp_path):
    backbone.trainable = False
    x = _images(4, seed=9)
    y = keras.utils.to_categorical([0, 1, 2, 0], NUM_CLASSES)
    embeddings = backbone.predict(x, verbose=0)

    head = build_embedding_head(NUM_CLASSES)
    assert head.input_shape == (None, EMBEDDING_DIM)
    head.compile(optimizer=keras.optimizers.Adam(1e-2), loss="categorical_crossentropy")
    head.fit(embeddings, y, batch_size=4, epochs=3, verbose=0)
    want = head.predict(embeddings, verbose=0)

    model = attach_head(backbone, head)
    assert model.get_layer("facenet_head") is head
    got = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    path = str(tmp_path / "facenet.keras")
    model.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), got)
    np.testing.assert_array_equal(load_model(path).predict(x, verbose=0), got)


def test_finetune_classifier_trains_the_backbone_in_inference_mode(backbone):
    model = build_facenet_classifier(backbone, NUM_CLASSES, trainable_backbone=True)
    try:
        assert len(model.trainable_weights) > 200
        x = _images(2, seed=10)
        # the backbone's BatchNorm and Dropout behave as at inference even while fitting
        np.testing.assert_allclose(model(x, training=True).numpy(), model(x, training=False).numpy(), rtol=1e-5)
    finally:
        backbone.trainable = False


# --- real faces -----------------------------------------------------------------------------


def _crop_faces(detector, person_dir: Path, count: int) -> list[np.ndarray]:
    import cv2

    crops = []
    for photo in sorted(person_dir.iterdir()):
        if len(crops) == count:
            break
        bgr = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        faces = detector.detect_faces(rgb)
        if not faces:
            continue
        x, y, w, h = max(faces, key=lambda face: face["confidence"])["box"]
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(rgb.shape[1], x + w), min(rgb.shape[0], y + h)
        if x1 - x0 < 10 or y1 - y0 < 10:
            continue
        crops.append(cv2.resize(rgb[y0:y1, x0:x1], (160, 160), interpolation=cv2.INTER_AREA))
    return crops


@pytest.mark.slow
def test_same_person_embeddings_are_closer(backbone):
    if not TRAIN_DIR.is_dir():
        pytest.skip(f"{TRAIN_DIR} missing: run `faceproc fetch-data`")
    from mtcnn import MTCNN

    detector = MTCNN()
    people = sorted(p for p in TRAIN_DIR.iterdir() if p.is_dir())[:3]
    assert len(people) == 3
    crops, owners = [], []
    for index, person in enumerate(people):
        faces = _crop_faces(detector, person, 3)
        assert len(faces) == 3, f"fewer than 3 faces found for {person.name}"
        crops += faces
        owners += [index] * 3

    embeddings = backbone.predict(np.stack(crops).astype("float32"), verbose=0)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    distances = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
    owners = np.array(owners)
    same = owners[:, None] == owners[None]
    off_diagonal = ~np.eye(len(owners), dtype=bool)
    intra = distances[same & off_diagonal].mean()
    inter = distances[~same].mean()
    assert intra < inter, f"mean distance within a person {intra:.3f}, between people {inter:.3f}"
