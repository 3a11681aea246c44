"""FaceNet (Inception-ResNet-v1, 128-d embedding): the architecture, and the classifier built on it.

The architecture is the one stored as ``model_config`` JSON in ``facenet_keras.h5`` (Keras 2.1.2,
the file the reference notebook loads). That file cannot go through ``load_model``: its 21 scaled
residual sums are ``Lambda`` layers holding marshalled Python 3.6 bytecode, which modern Python
cannot load and which should never be run anyway. :func:`convert_model_config` therefore checks the
JSON against what FaceNet must look like and replaces every ``Lambda`` by
:class:`~faceproc.models.layers.ScaledResidual` with the ``scale`` from the layer's ``arguments``;
:func:`build_inception_resnet_v1` rebuilds the graph from it with ``keras.Model.from_config``.
Nothing stored in the file is executed. Weights are copied separately
(:mod:`faceproc.models.facenet_weights`), like facenet-pytorch separates model and weights.

The backbone (:func:`wrap_backbone`) takes raw RGB 0..255 (160, 160, 3), standardises each image
((x - mean) / std, FaceNet's prewhitening) and returns the 128-d ``Bottleneck_BatchNorm`` output,
not yet L2-normalised: 22,808,144 parameters, as the notebook prints.

Two ways to train the ``facenet`` model (``train.facenet_mode``):

- ``frozen`` (default): compute each face's embedding once with the backbone, train
  :func:`build_embedding_head` (L2-normalise -> Dense(softmax)) on the cached embeddings, then
  :func:`attach_head` puts that same head on the backbone for saving and prediction. Registry
  defaults for the head: 20 epochs, batch 32, Adam 1e-2 (milliseconds per epoch).
- ``finetune``: :func:`build_facenet_classifier` with ``trainable_backbone=True``, trained on images.
  The backbone runs in inference mode (``training=False``), so its BatchNorm statistics and dropout
  stay as pretrained while its weights train; use a small learning rate (1e-5).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from faceproc.models.errors import WeightsError
from faceproc.models.keras_env import keras
from faceproc.models.layers import PerImageStandardization, ScaledResidual

INPUT_SHAPE = (160, 160, 3)
EMBEDDING_DIM = 128
FACENET_PARAMS = 22_808_144
OUTPUT_LAYER = "Bottleneck_BatchNorm"
BOTTLENECK_LAYER = "Bottleneck"

# Layer classes the FaceNet file uses; anything else means another model (or a hostile file).
ALLOWED_LAYER_CLASSES = frozenset(
    {
        "InputLayer",
        "Conv2D",
        "BatchNormalization",
        "Activation",
        "MaxPooling2D",
        "Concatenate",
        "Lambda",
        "GlobalAveragePooling2D",
        "Dropout",
        "Dense",
    }
)
# Keys that would make Keras import a module or run code while deserialising.
_FORBIDDEN_KEYS = frozenset({"module", "registered_name", "function", "fn", "custom_objects"})


def _fail(message: str) -> WeightsError:
    return WeightsError(f"not the FaceNet Inception-ResNet-v1: {message}")


def _check_no_code(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _FORBIDDEN_KEYS:
                raise _fail(f"layer {where} has a {key!r} entry in its config")
            _check_no_code(item, where)
    elif isinstance(value, list):
        for item in value:
            _check_no_code(item, where)


def convert_model_config(model_config: dict[str, Any] | str) -> dict[str, Any]:
    """The file's ``model_config`` checked and made loadable: ``Lambda`` -> ``ScaledResidual``.

    Raises :class:`WeightsError` naming what does not match FaceNet.
    """
    if isinstance(model_config, (str, bytes)):
        try:
            model_config = json.loads(model_config)
        except ValueError as exc:
            raise _fail(f"model_config is not valid JSON ({exc})") from None
    if not isinstance(model_config, dict):
        raise _fail("model_config is not a JSON object")
    class_name = model_config.get("class_name")
    if class_name not in ("Model", "Functional"):
        raise _fail(f"model_config describes a {class_name!r} model, expected a functional 'Model'")
    config = copy.deepcopy(model_config.get("config") or {})
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers:
        raise _fail("model_config has no layers")
    names = [layer.get("name") for layer in layers if isinstance(layer, dict)]
    if len(names) != len(layers):
        raise _fail("model_config has a malformed layer entry")
    if BOTTLENECK_LAYER not in names:
        raise _fail(f"model_config has no {BOTTLENECK_LAYER!r} layer")
    if OUTPUT_LAYER not in names:
        raise _fail(f"model_config has no {OUTPUT_LAYER!r} layer")
    if len(config.get("input_layers") or []) != 1 or len(config.get("output_layers") or []) != 1:
        raise _fail("expected exactly one input and one output")
    if config["output_layers"][0][0] != OUTPUT_LAYER:
        raise _fail(f"its output is {config['output_layers'][0][0]!r}, expected {OUTPUT_LAYER!r}")

    converted = []
    for layer in layers:
        name, cls, layer_config = layer["name"], layer.get("class_name"), layer.get("config") or {}
        if cls not in ALLOWED_LAYER_CLASSES:
            raise _fail(f"layer {name!r} is a {cls!r}, which FaceNet does not use")
        if cls == "Lambda":
            arguments = layer_config.get("arguments") or {}
            scale = arguments.get("scale")
            if set(arguments) != {"scale"} or not isinstance(scale, (int, float)) or isinstance(scale, bool):
                raise _fail(f"Lambda layer {name!r} is not a scaled residual sum (arguments {arguments!r})")
            inbound = layer.get("inbound_nodes") or []
            if len(inbound) != 1 or len(inbound[0]) != 2:
                raise _fail(f"Lambda layer {name!r} does not sum exactly two tensors")
            layer = {
                "class_name": "ScaledResidual",
                "name": name,
                "config": {"name": name, "trainable": bool(layer_config.get("trainable", True)), "scale": float(scale)},
                "inbound_nodes": layer["inbound_nodes"],
            }
        else:
            _check_no_code(layer_config, repr(name))
        if cls == "InputLayer":
            shape = layer_config.get("batch_input_shape") or layer_config.get("batch_shape")
            if list(shape or [])[1:] != list(INPUT_SHAPE):
                raise _fail(f"its input shape is {shape}, expected (None, 160, 160, 3)")
        if cls == "Dense" and name == BOTTLENECK_LAYER and layer_config.get("units") != EMBEDDING_DIM:
            raise _fail(f"{BOTTLENECK_LAYER!r} has {layer_config.get('units')} units, expected {EMBEDDING_DIM}")
        converted.append(layer)
    config["layers"] = converted
    config["name"] = config.get("name") or "inception_resnet_v1"
    return config


def build_inception_resnet_v1(model_config: dict[str, Any] | str) -> keras.Model:
    """The Inception-ResNet-v1 graph from the FaceNet file's ``model_config``, randomly initialised.

    Input: standardised images (160, 160, 3); output: the 128-d bottleneck. Raises
    :class:`WeightsError` when the config is not FaceNet's (including a parameter count other than
    22,808,144).
    """
    config = convert_model_config(model_config)
    try:
        model = keras.Model.from_config(config, custom_objects={"ScaledResidual": ScaledResidual})
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise _fail(f"its model_config does not build ({reason})") from exc
    params = model.count_params()
    if params != FACENET_PARAMS:
        raise _fail(f"it has {params:,} parameters, expected {FACENET_PARAMS:,}")
    if tuple(model.output_shape) != (None, EMBEDDING_DIM):
        raise _fail(f"its output shape is {model.output_shape}, expected (None, {EMBEDDING_DIM})")
    return model


def wrap_backbone(inception: keras.Model, name: str = "facenet") -> keras.Model:
    """Raw RGB 0..255 -> per-image standardisation -> `inception` -> 128-d embedding."""
    inputs = keras.Input(shape=INPUT_SHAPE, dtype="float32", name="image")
    x = PerImageStandardization(name="prewhiten")(inputs)
    embedding = inception(x)
    return keras.Model(inputs, embedding, name=name)


def build_embedding_head(num_classes: int, name: str = "facenet_head") -> keras.Model:
    """128-d embedding -> L2-normalise -> Dense(num_classes, softmax): the head frozen mode trains."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    inputs = keras.Input(shape=(EMBEDDING_DIM,), dtype="float32", name="embedding")
    x = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")(inputs)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def attach_head(backbone: keras.Model, head: keras.Model, name: str = "facenet_classifier") -> keras.Model:
    """One model, image -> probabilities, that uses `backbone` and `head` themselves (shared weights).

    Train the head on cached embeddings, then save ``attach_head(backbone, head)``: the saved model
    holds the same head weights and predicts from raw 0..255 images. The backbone runs in inference
    mode (BatchNorm moving statistics, no dropout) even when the model is fitted.
    """
    if tuple(backbone.output_shape) != (None, EMBEDDING_DIM) or tuple(head.input_shape) != (None, EMBEDDING_DIM):
        raise ValueError(
            f"backbone output {backbone.output_shape} and head input {head.input_shape} "
            f"must both be (None, {EMBEDDING_DIM})"
        )
    inputs = keras.Input(shape=INPUT_SHAPE, dtype="float32", name="image")
    embedding = backbone(inputs, training=False)
    outputs = head(embedding)
    return keras.Model(inputs, outputs, name=name)


def build_facenet_classifier(backbone: keras.Model, num_classes: int, trainable_backbone: bool) -> keras.Model:
    """`backbone` -> L2-normalise -> Dense(num_classes, softmax), with a new head.

    Sets ``backbone.trainable = trainable_backbone`` (on the object passed in).
    """
    backbone.trainable = bool(trainable_backbone)
    return attach_head(backbone, build_embedding_head(num_classes))
