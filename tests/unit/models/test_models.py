"""The model registry, the CNN and ResNet50 builders, ImageNet weight resolution and the custom layers.

Real TensorFlow throughout. ResNet50 is slow on two CPU cores, so each ResNet test does at most one
training step on a batch of two.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from faceproc.config import TrainConfig
from faceproc.core.model_names import MODEL_NAMES as ALL_MODELS
from faceproc.models import (
    REGISTRY,
    BuildContext,
    UnknownModelError,
    WeightsError,
    WeightsUnavailable,
    get_spec,
    model_names,
    parse_model_names,
    resolve_spec,
)
from faceproc.models.cnn import build_cnn
from faceproc.models.imagenet_weights import (
    KERAS_WEIGHTS_NAME,
    LOCAL_WEIGHTS_NAME,
    keras_cache_path,
    keras_download,
    local_imagenet_weights,
    resolve_imagenet_weights,
)
from faceproc.models.keras_env import keras
from faceproc.models.layers import PerImageStandardization, ResNetPreprocess, ScaledResidual
from faceproc.models.registry import OPTIMIZERS
from faceproc.models.resnet import build_resnet50, load_backbone_weights
from faceproc.models.saving import load_model
from tests.conftest import FACENET_WEIGHTS

NUM_CLASSES = 3
UNREACHABLE = "http://127.0.0.1:9/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"  # refused at once


def _images(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, size=(n, 160, 160, 3)).astype("float32")


def _labels(n: int = 2) -> np.ndarray:
    return keras.utils.to_categorical(np.arange(n) % NUM_CLASSES, NUM_CLASSES).astype("float32")


@pytest.fixture(scope="module")
def resnet_weights_file(tmp_path_factory) -> tuple[str, list[np.ndarray]]:
    """A ResNet50 notop weights file written here (no internet), and the arrays it holds."""
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(160, 160, 3))
    path = tmp_path_factory.mktemp("imagenet") / "my_resnet50_notop.h5"
    backbone.save_weights(str(path))
    return str(path), backbone.get_weights()


# --- registry -------------------------------------------------------------------------------


def test_keras_is_tf_keras():
    assert keras.__name__ == "tf_keras"
    assert keras.__version__.startswith("2.")
    assert os.environ["TF_USE_LEGACY_KERAS"] == "1"


def test_tensorflow_runs_its_onednn_kernels():
    """TensorFlow's x86 wheels leave them off on CPUs without AVX512_VNNI/BF16 or AMX, where they train
    ResNet50 several times faster; importing faceproc first turns them on (faceproc.TF_ENV)."""
    from tensorflow.python.util import _pywrap_util_port

    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert _pywrap_util_port.IsMklEnabled()


def test_registry_holds_the_four_models_in_config_order():
    assert model_names() == list(ALL_MODELS)
    for name, spec in REGISTRY.items():
        assert spec.name == name
        assert spec.epochs > 0 and spec.batch_size > 0 and 0 < spec.learning_rate < 1
        assert spec.description
        assert isinstance(spec.make_optimizer(10), keras.optimizers.legacy.Adam)
    assert get_spec("cnn") is REGISTRY["cnn"]


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_fused_optimizers_update_weights_as_the_newer_classes_do(name):
    """The legacy classes are chosen for their cheaper trace: three steps on a schedule must land on
    the weights the newer class of the same name gives."""
    import dataclasses

    spec = dataclasses.replace(REGISTRY["cnn"], optimizer=name, schedule="cosine", warmup_epochs=1, epochs=3)
    newer = getattr(keras.optimizers, OPTIMIZERS[name].removeprefix("legacy."))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    start, final = [], []
    for optimizer in (spec.make_optimizer(1), newer(learning_rate=spec.learning_rate_schedule(1))):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        start.append(model.get_weights()[0])
        model.fit(x, y, batch_size=8, epochs=3, verbose=0)
        final.append(model.get_weights())
    assert not isinstance(spec.make_optimizer(1), newer)
    np.testing.assert_array_equal(start[0], start[1])
    assert np.abs(final[0][0] - start[0]).max() > 1e-4  # it did train
    for fused, unfused in zip(*final):
        np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-6)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError) as info:
        get_spec("vgg16")
    assert "vgg16" in str(info.value)
    for name in ALL_MODELS:
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_model_names():
    assert parse_model_names("cnn,facenet") == ["cnn", "facenet"]
    assert parse_model_names(" facenet , cnn,cnn ") == ["facenet", "cnn"]
    assert parse_model_names(["resnet50"]) == ["resnet50"]
    assert parse_model_names("all") == list(ALL_MODELS)
    with pytest.raises(UnknownModelError, match="resnet"):
        parse_model_names("cnn,resnet")
    with pytest.raises(UnknownModelError, match="no model selected"):
        parse_model_names(" , ")


def test_resolve_spec_applies_mode_defaults_then_overrides():
    assert resolve_spec("cnn") is REGISTRY["cnn"]
    finetune = resolve_spec("facenet", TrainConfig(facenet_mode="finetune"))
    assert (finetune.epochs, finetune.batch_size, finetune.learning_rate) == (10, 16, 1e-5)
    registered = REGISTRY["resnet50"]
    overridden = resolve_spec("resnet50", TrainConfig(epochs=2, learning_rate=0.5))
    assert (overridden.epochs, overridden.batch_size, overridden.learning_rate) == (2, 16, 0.5)
    assert REGISTRY["resnet50"] is registered and registered.epochs != 2  # the registry itself is untouched


# --- every registered model builds and trains one step -------------------------------------


@pytest.mark.parametrize("name", list(ALL_MODELS))
def test_registered_model_builds_and_trains_one_step(name, resnet_weights_file, tmp_path):
    if name == "facenet" and not FACENET_WEIGHTS.is_file():
        pytest.skip(f"{FACENET_WEIGHTS} missing: run `faceproc fetch-data`")
    context = BuildContext(
        train=TrainConfig(imagenet_weights=resnet_weights_file[0], facenet_weights=str(FACENET_WEIGHTS)),
        models_dir=str(tmp_path),
    )
    spec = get_spec(name)
    model = spec.make(NUM_CLASSES, context)
    assert model.input_shape == (None, 160, 160, 3)
    assert model.output_shape == (None, NUM_CLASSES)

    x, y = _images(), _labels()
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (2, NUM_CLASSES)
    assert not np.isnan(probabilities).any()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    model.compile(optimizer=spec.make_optimizer(10), loss="categorical_crossentropy")
    before = [w.numpy().copy() for w in model.trainable_weights]
    assert before, "the model has nothing to train"
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [w.numpy() for w in model.trainable_weights]
    changed = [not np.array_equal(a, b) for a, b in zip(before, after)]
    assert changed[-1], "the output layer did not change"
    assert all(np.isfinite(w).all() for w in after)


def test_resnet50_imagenet_from_registry_uses_the_named_file(resnet_weights_file, tmp_path):
    path, arrays = resnet_weights_file
    context = BuildContext(train=TrainConfig(imagenet_weights=path), models_dir=str(tmp_path))
    model = get_spec("resnet50_imagenet").make(NUM_CLASSES, context)
    loaded = model.get_layer("resnet50").get_weights()
    assert len(loaded) == len(arrays)
    for got, want in zip(loaded, arrays):
        np.testing.assert_array_equal(got, want)


def test_resnet50_imagenet_without_weights_is_unavailable(tmp_path, monkeypatch):
    # the registry builder goes to the network; any failure there must become WeightsUnavailable.
    # An unreachable mirror and an empty Keras cache make that deterministic, internet or not.
    monkeypatch.setenv("FACEPROC_IMAGENET_WEIGHTS_URL", UNREACHABLE)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    context = BuildContext(train=TrainConfig(imagenet_weights=None), models_dir=str(tmp_path))
    with pytest.raises(WeightsUnavailable) as info:
        get_spec("resnet50_imagenet").make(NUM_CLASSES, context)
    assert str(tmp_path / LOCAL_WEIGHTS_NAME) in str(info.value)
    assert str(tmp_path / "keras-home" / "models" / KERAS_WEIGHTS_NAME) in str(info.value)


# --- ImageNet weight resolution ------------------------------------------------------------


def test_imagenet_url_and_hash_are_keras_own():
    from tf_keras.src.applications import resnet as keras_resnet

    assert keras_download() == (keras_resnet.BASE_WEIGHTS_PATH + KERAS_WEIGHTS_NAME,
                                keras_resnet.WEIGHTS_HASHES["resnet50"][1])


def test_local_weights_are_found_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    models = tmp_path / "models"
    assert local_imagenet_weights(None, str(models)) is None
    cached = tmp_path / "keras-home" / "models" / KERAS_WEIGHTS_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"placeholder")
    assert local_imagenet_weights(None, str(models)) == str(cached)
    models.mkdir()
    (models / LOCAL_WEIGHTS_NAME).write_bytes(b"placeholder")
    assert local_imagenet_weights(None, str(models)) == str(models / LOCAL_WEIGHTS_NAME)  # models_dir first
    assert local_imagenet_weights(str(tmp_path / "nope.h5"), str(models)) is None  # the user's file or nothing


def test_user_weights_file_is_used_first(resnet_weights_file, tmp_path):
    path, _ = resnet_weights_file
    (tmp_path / LOCAL_WEIGHTS_NAME).write_bytes(b"not used")
    assert resolve_imagenet_weights(path, str(tmp_path)) == os.path.abspath(path)


def test_missing_user_weights_file_is_an_error(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(WeightsUnavailable, match="nope.h5"):
        resolve_imagenet_weights(str(missing), str(tmp_path))


def test_models_dir_file_is_used_when_present(tmp_path):
    local = tmp_path / LOCAL_WEIGHTS_NAME
    local.write_bytes(b"placeholder")
    assert resolve_imagenet_weights(None, str(tmp_path), origin=UNREACHABLE) == str(local)


def test_failed_download_says_where_to_put_the_file(tmp_path, capfd, caplog):
    cache = tmp_path / "keras-cache"  # created by resolve_imagenet_weights, so Keras uses it
    with caplog.at_level(logging.INFO, logger="faceproc"), pytest.raises(WeightsUnavailable) as info:
        resolve_imagenet_weights(None, str(tmp_path / "models"), origin=UNREACHABLE, cache_dir=str(cache))
    assert "Downloading data from" not in capfd.readouterr().out  # Keras' own print, not faceproc's line
    assert any(record.name == "faceproc.models.imagenet_weights" and UNREACHABLE in record.getMessage()
               for record in caplog.records)
    assert keras.utils.is_interactive_logging_enabled()  # Keras' setting is put back
    message = str(info.value)
    assert "\n" not in message
    assert f"could not be downloaded from {UNREACHABLE} (" in message
    assert message.count(UNREACHABLE) == 1 and "URL fetch failure" not in message, message
    assert str(tmp_path / "models" / LOCAL_WEIGHTS_NAME) in message
    assert keras_cache_path(str(cache)) in message
    assert keras_cache_path(str(cache)) == str(cache / "models" / KERAS_WEIGHTS_NAME)
    assert "train.imagenet_weights" in message
    assert not (cache / "models" / KERAS_WEIGHTS_NAME).exists()  # no partial file left behind


def test_build_resnet50_loads_the_exact_weights(resnet_weights_file):
    path, arrays = resnet_weights_file
    model = build_resnet50(NUM_CLASSES, path)
    for got, want in zip(model.get_layer("resnet50").get_weights(), arrays):
        np.testing.assert_array_equal(got, want)
    assert model.count_params() == 23_587_712 + 2048 * 1024 + 1024 + 1024 * NUM_CLASSES + NUM_CLASSES


def test_corrupt_or_foreign_resnet_weights_are_a_weights_error(tmp_path):
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(160, 160, 3))
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError, match="not an HDF5 file"):
        load_backbone_weights(backbone, str(corrupt))

    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    foreign = tmp_path / "foreign.h5"
    tiny.save_weights(str(foreign))
    with pytest.raises(WeightsError, match="does not fit ResNet50") as info:
        load_backbone_weights(backbone, str(foreign))
    assert "\n" not in str(info.value)


# --- CNN ------------------------------------------------------------------------------------


def test_cnn_keeps_the_notebook_layers_with_batch_norm():
    model = build_cnn(5)  # at the notebook's 160x160
    # the notebook's 93,893 parameters, less the three convolutions' biases (224), plus four per
    # channel for batch normalisation (896)
    assert model.count_params() == 93_893 - 224 + 896
    kinds = [type(layer).__name__ for layer in model.layers[1:]]
    block = ["Conv2D", "BatchNormalization", "Activation"]
    assert kinds == ["Rescaling", *block, "MaxPooling2D", "Dropout", *block, "MaxPooling2D", "Dropout", *block,
                     "GlobalAveragePooling2D", "Dropout", "Dense"]
    assert model.get_layer("conv3").output_shape == (None, 36, 36, 128)


def test_cnn_works_at_a_smaller_size_inside_a_160_input():
    model = build_cnn(5, image_size=48)
    assert model.input_shape == (None, 160, 160, 3)
    assert model.get_layer("resize").output_shape == (None, 48, 48, 3)
    assert model.get_layer("conv3").output_shape == (None, 8, 8, 128)
    assert model.count_params() == build_cnn(5).count_params()  # global pooling: same weights at any size


def test_cnn_saves_and_loads_with_plain_keras(tmp_path):
    model = build_cnn(NUM_CLASSES)
    x = _images(4, seed=1)
    want = model.predict(x, verbose=0)
    path = str(tmp_path / "cnn.keras")
    model.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), want)

    np.testing.assert_array_equal(load_model(path).predict(x, verbose=0), want)  # the fast loader, same model


def test_resnet50_saves_and_loads_with_plain_keras(tmp_path):
    model = build_resnet50(NUM_CLASSES, None)
    x = _images(2, seed=2)
    path = str(tmp_path / "resnet50.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# --- layers ---------------------------------------------------------------------------------


def test_per_image_standardization_is_facenet_prewhitening():
    x = _images(3, seed=3)
    x[2] = 7.0  # a flat image: the std floor keeps it finite
    got = PerImageStandardization()(x).numpy()
    for image, out in zip(x, got):
        std_adj = max(image.std(), 1.0 / np.sqrt(image.size))
        np.testing.assert_allclose(out, (image - image.mean()) / std_adj, rtol=1e-4, atol=1e-4)
    assert np.isfinite(got).all()


def test_resnet_preprocess_is_keras_preprocess_input():
    x = _images(2, seed=4)
    want = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(ResNetPreprocess()(x).numpy(), want, rtol=1e-6, atol=1e-4)


def test_scaled_residual_and_its_config():
    layer = ScaledResidual(0.17, name="s")
    a, b = np.ones((1, 2), "float32"), np.full((1, 2), 2.0, "float32")
    np.testing.assert_allclose(layer([a, b]).numpy(), 1.34, rtol=1e-6)
    clone = ScaledResidual.from_config(layer.get_config())
    assert clone.scale == pytest.approx(0.17) and clone.name == "s"
    assert keras.saving.get_registered_name(ScaledResidual) == "faceproc>ScaledResidual"


def test_cosine_schedule_warms_up_then_decays():
    import dataclasses

    spec = dataclasses.replace(REGISTRY["cnn"], schedule="cosine", warmup_epochs=2, epochs=10, learning_rate=1e-3,
                               optimizer="adamw", weight_decay=1e-4)
    rate = spec.learning_rate_schedule(steps_per_epoch=5)
    assert float(rate(0)) == pytest.approx(1e-4)  # a tenth at the start
    assert float(rate(10)) == pytest.approx(1e-3)  # the peak after two epochs
    assert float(rate(49)) < 1e-5  # about zero at the end
    assert float(spec.make_optimizer(5).weight_decay) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="unknown schedule"):
        dataclasses.replace(spec, schedule="steps").make_optimizer(5)
