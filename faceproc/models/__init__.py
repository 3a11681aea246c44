"""The four classifiers, their registry and the weight loading they need.

Importing this package registers the custom layers, so ``keras.models.load_model(path)`` loads any
saved faceproc model without ``custom_objects``. Keras here is tf-keras (see ``keras_env``).
"""

from faceproc.models import layers as _layers  # noqa: F401  (registers the custom layers)
from faceproc.models.errors import ModelError, UnknownModelError, WeightsError, WeightsUnavailable
from faceproc.models.keras_env import keras, tf
from faceproc.models.registry import (
    REGISTRY,
    BuildContext,
    ModelSpec,
    get_spec,
    model_names,
    parse_model_names,
    resolve_spec,
)

__all__ = [
    "REGISTRY",
    "BuildContext",
    "ModelError",
    "ModelSpec",
    "UnknownModelError",
    "WeightsError",
    "WeightsUnavailable",
    "get_spec",
    "keras",
    "model_names",
    "parse_model_names",
    "resolve_spec",
    "tf",
]
