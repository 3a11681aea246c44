"""Custom layers, registered so that ``keras.models.load_model(path)`` needs no ``custom_objects``.

Importing this module (``faceproc.models.saving`` does) registers every layer under the
``faceproc`` package name (``faceproc>ScaledResidual`` and so on in saved configs).

- :class:`ScaledResidual` replaces the ``Lambda`` layers of the Keras 2.1.2 FaceNet file
  (``inputs[0] + inputs[1] * scale``) so that no bytecode stored in a file is ever run.
- :class:`PerImageStandardization` is FaceNet's "prewhitening": ``(x - mean) / max(std, 1/sqrt(n))``
  per image, where ``n`` is the number of values in the image.
- :class:`ResNetPreprocess` is ``keras.applications.resnet50.preprocess_input`` (caffe mode:
  RGB -> BGR, subtract the ImageNet channel means, no scaling) as a layer.

All models take raw RGB pixel values 0..255 and carry their own preprocessing, so a saved model is
self-contained.
"""

from __future__ import annotations

from typing import Any

from faceproc.models.keras_env import keras, tf

_PACKAGE = "faceproc"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ScaledResidual(keras.layers.Layer):
    """``inputs[0] + inputs[1] * scale``: Inception-ResNet's scaled residual sum."""

    def __init__(self, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(f"{self.name}: ScaledResidual takes a list of two tensors")
        shortcut, residual = inputs
        return shortcut + residual * tf.cast(self.scale, residual.dtype)

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PerImageStandardization(keras.layers.Layer):
    """``(x - mean) / max(std, 1 / sqrt(n))`` over each image (all pixels and channels).

    The same as FaceNet's ``prewhiten`` and ``tf.image.per_image_standardization``: the floor on the
    standard deviation keeps a flat image from being divided by zero.
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, self.compute_dtype)
        axes = list(range(1, x.shape.rank))
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)
        std = tf.math.reduce_std(x, axis=axes, keepdims=True)
        n = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
        return (x - mean) / tf.maximum(std, tf.math.rsqrt(n))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResNetPreprocess(keras.layers.Layer):
    """ResNet50's own ``preprocess_input`` (caffe: RGB -> BGR, minus the ImageNet channel means)."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.cast(inputs, self.compute_dtype)
        return keras.applications.resnet50.preprocess_input(x)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

