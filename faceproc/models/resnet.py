"""ResNet50 classifiers: random init (``resnet50``) and ImageNet-initialised (``resnet50_imagenet``).

Graph: raw RGB 0..255 (160, 160, 3) -> :class:`~faceproc.models.layers.ResNetPreprocess` (ResNet's
own caffe preprocessing) -> ``keras.applications.ResNet50(include_top=False)`` as a nested model
named ``resnet50`` -> GlobalAveragePooling -> Dense(1024, relu) -> Dropout(0.5) -> Dense(softmax).
The head is the notebook's (it used Flatten over the 5x5x2048 map; global average pooling keeps the
head at 2.1 M instead of 52 M parameters). 25,691,013 parameters for five classes.

ImageNet weights (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``, 94 MB) are found by
:func:`resolve_imagenet_weights`, in this order: the file the user names
(``train.imagenet_weights``), ``<models_dir>/resnet50_imagenet_notop.h5``, then Keras' own
download and cache (``~/.keras/models/``, or ``$KERAS_HOME/models/``), with the URL and hash that
``keras.applications`` uses (``$FACEPROC_IMAGENET_WEIGHTS_URL`` may name a mirror of the same file).
When none works, :class:`~faceproc.models.errors.WeightsUnavailable` says why and where to put the
file, and training reports the model as skipped.

Registry defaults: 8 epochs, batch 16, Adam 1e-4 for both variants (a full ResNet50 step on 16
faces takes a few seconds on two CPU cores).
"""

from __future__ import annotations

import os

import h5py

from faceproc.models.errors import WeightsError, WeightsUnavailable
from faceproc.models.keras_env import keras
from faceproc.models.layers import ResNetPreprocess

INPUT_SHAPE = (160, 160, 3)
HEAD_UNITS = 1024
HEAD_DROPOUT = 0.5
LOCAL_WEIGHTS_NAME = "resnet50_imagenet_notop.h5"  # the name looked for in models_dir
KERAS_WEIGHTS_NAME = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
KERAS_CACHE_SUBDIR = "models"
URL_ENV = "FACEPROC_IMAGENET_WEIGHTS_URL"  # a mirror of the file, for clusters without internet

# The URL and MD5 that keras.applications.ResNet50(weights="imagenet", include_top=False) uses.
try:  # read them from the installed tf_keras, so they follow its version
    from tf_keras.src.applications.resnet import BASE_WEIGHTS_PATH as _BASE
    from tf_keras.src.applications.resnet import WEIGHTS_HASHES as _HASHES

    IMAGENET_WEIGHTS_URL = _BASE + KERAS_WEIGHTS_NAME
    IMAGENET_WEIGHTS_MD5 = _HASHES["resnet50"][1]
except (ImportError, KeyError, IndexError):  # pragma: no cover - layout of a future tf_keras
    IMAGENET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + KERAS_WEIGHTS_NAME
    IMAGENET_WEIGHTS_MD5 = "4d473c1dd8becc155b73f8504c6f6626"


def _cache_dir(cache_dir: str | None) -> str | None:
    return cache_dir or os.environ.get("KERAS_HOME") or None


def keras_cache_path(cache_dir: str | None = None) -> str:
    """Where ``keras.utils.get_file`` keeps the ImageNet file (its own rule: ~/.keras, else /tmp/.keras)."""
    base = os.path.expanduser(_cache_dir(cache_dir) or os.path.join("~", ".keras"))
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return os.path.join(base, KERAS_CACHE_SUBDIR, KERAS_WEIGHTS_NAME)


def resolve_imagenet_weights(
    user_path: str | None,
    models_dir: str,
    *,
    origin: str | None = None,
    cache_dir: str | None = None,
) -> str:
    """A local path to ResNet50 ImageNet notop weights, or :class:`WeightsUnavailable`.

    1. ``user_path`` when given; it must exist (no fallback: the user asked for that file).
    2. ``<models_dir>/resnet50_imagenet_notop.h5`` when present.
    3. ``keras.utils.get_file`` (download once into Keras' cache, MD5-checked). The URL is
       ``origin``, else ``$FACEPROC_IMAGENET_WEIGHTS_URL`` (a mirror), else Keras' own; the cache is
       ``cache_dir``, else ``$KERAS_HOME``, else Keras' default ``~/.keras``.
    """
    origin = origin or os.environ.get(URL_ENV) or IMAGENET_WEIGHTS_URL
    cache_dir = _cache_dir(cache_dir)
    if user_path:
        path = os.path.expanduser(user_path)
        if not os.path.isfile(path):
            raise WeightsUnavailable(
                f"ResNet50 ImageNet weights file {user_path!r} (train.imagenet_weights) does not exist"
            )
        return os.path.abspath(path)
    local = os.path.abspath(os.path.join(models_dir, LOCAL_WEIGHTS_NAME))
    if os.path.isfile(local):
        return local
    if cache_dir:  # get_file silently falls back to /tmp/.keras when the directory does not exist
        try:
            os.makedirs(os.path.expanduser(cache_dir), exist_ok=True)
        except OSError:
            pass
    try:
        return keras.utils.get_file(
            KERAS_WEIGHTS_NAME,
            origin,
            cache_subdir=KERAS_CACHE_SUBDIR,
            file_hash=IMAGENET_WEIGHTS_MD5,
            cache_dir=cache_dir,
        )
    except Exception as exc:  # get_file raises a bare Exception on URL errors, ValueError on a bad hash
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise WeightsUnavailable(
            f"ResNet50 ImageNet weights could not be downloaded ({reason}). "
            f"Put Keras' {KERAS_WEIGHTS_NAME} (from {IMAGENET_WEIGHTS_URL}) at {local} "
            f"or at {keras_cache_path(cache_dir)}, or name it with --set train.imagenet_weights=PATH"
        ) from exc


def load_backbone_weights(backbone: keras.Model, path: str) -> None:
    """Load a ResNet50 notop ``.h5`` into `backbone`; :class:`WeightsError` when it does not fit."""
    if not os.path.isfile(path):
        raise WeightsUnavailable(f"ResNet50 weights file {path} does not exist")
    if not h5py.is_hdf5(path):
        raise WeightsError(f"ResNet50 weights file {path} is not an HDF5 file (corrupt or wrong file)")
    try:
        backbone.load_weights(path)
    except Exception as exc:  # h5py OSError, Keras ValueError on layer/shape mismatch
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise WeightsError(f"ResNet50 weights file {path} does not fit ResNet50 notop: {reason}") from exc


def build_resnet50(
    num_classes: int,
    weights: str | None = None,
    *,
    models_dir: str = "models",
    name: str | None = None,
    bn_momentum: float | None = None,
    image_size: int = INPUT_SHAPE[0],
) -> keras.Model:
    """ResNet50 + the notebook head for `num_classes` classes.

    `weights`: None (random init), a local ``.h5`` of ResNet50 notop weights, or ``"imagenet"``
    (resolved with :func:`resolve_imagenet_weights` against `models_dir`). `bn_momentum` replaces
    the BatchNormalization momentum of the backbone. `image_size` below 160 resizes the crop inside
    the model, before the backbone (the saved model still takes 160x160).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if weights == "imagenet":
        weights = resolve_imagenet_weights(None, models_dir)
    layers = keras.layers
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if weights is not None:
        load_backbone_weights(backbone, weights)
    if bn_momentum is not None:  # Keras' 0.99 leaves the moving statistics near their start after a few
        for layer in backbone.layers:  # hundred steps, so a model trained from scratch infers badly
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = bn_momentum
    inputs = keras.Input(shape=INPUT_SHAPE, dtype="float32", name="image")
    x = inputs
    if image_size != INPUT_SHAPE[0]:
        x = layers.Resizing(image_size, image_size, interpolation="area", name="resize")(x)
    x = ResNetPreprocess(name="resnet_preprocess")(x)
    x = backbone(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(HEAD_UNITS, activation="relu", name="head_dense")(x)
    x = layers.Dropout(HEAD_DROPOUT, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    default_name = "resnet50" if weights is None else "resnet50_imagenet"
    return keras.Model(inputs, outputs, name=name or default_name)
