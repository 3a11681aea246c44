"""ResNet50 classifiers: random init (``resnet50``) and ImageNet-initialised (``resnet50_imagenet``).

Graph: raw RGB 0..255 (160, 160, 3) -> Resizing to the recipe's `image_size` when below 160 ->
:class:`~faceproc.models.layers.ResNetPreprocess` (ResNet's own caffe preprocessing) -> ``keras.applications.ResNet50(include_top=False)`` as a nested model
named ``resnet50`` -> GlobalAveragePooling -> Dense(1024, relu) -> Dropout(0.5) -> Dense(softmax).
The head is the notebook's (it used Flatten over the 5x5x2048 map; global average pooling keeps the
head at 2.1 M instead of 52 M parameters). 25,691,013 parameters for five classes.

ImageNet weights are found by :mod:`faceproc.models.imagenet_weights` (weight loading apart from the
architecture); when none can be had, training reports the model as skipped.

Recipes live in :mod:`faceproc.models.registry` (``resnet50``: 48x48, 45 epochs, Adam 1e-3 with
warm-up and cosine; ``resnet50_imagenet``: 160x160, 8 epochs, Adam 1e-4).
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
    name: str | None = None,
    bn_momentum: float | None = None,
    image_size: int = INPUT_SHAPE[0],
) -> keras.Model:
    """ResNet50 + the notebook head for `num_classes` classes.

    `weights`: None (random init) or a local ``.h5`` of ResNet50 notop weights (the registry finds
    it with :func:`~faceproc.models.imagenet_weights.resolve_imagenet_weights`). `bn_momentum` replaces
    the BatchNormalization momentum of the backbone. `image_size` below 160 resizes the crop inside
    the model, before the backbone (the saved model still takes 160x160).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
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
