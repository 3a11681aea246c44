"""The four classifiers, their registry and the weight loading they need.

Importing this package (and the registry) does not import TensorFlow, so a rerun can decide that
every model is up to date in a fraction of a second. ``faceproc.models.saving.load_model`` (or
``import faceproc.models.layers``, which registers the custom layers, before
``keras.models.load_model(path)``) loads any saved faceproc model. Keras here is tf-keras (see
``keras_env``).
"""

from faceproc.models.errors import ModelError, UnknownModelError, WeightsError, WeightsUnavailable
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
    "model_names",
    "parse_model_names",
    "resolve_spec",
]
