"""The reference notebook's small CNN, with batch normalisation and a smaller working size.

Resizing(image_size) -> Rescaling(1/255) -> [Conv2D(32, 3, valid) -> BatchNorm -> ReLU] -> MaxPool(2)
-> Dropout -> [Conv2D(64, 3) -> BatchNorm -> ReLU] -> MaxPool(2) -> Dropout -> [Conv2D(128, 3) ->
BatchNorm -> ReLU] -> GlobalAveragePooling -> Dropout -> Dense(classes, softmax).

The notebook's layers, filters and kernels (93,893 parameters at 160x160 for five classes); what
changed, and why (docs/benchmarks.md, "Recognition quality"): it fed raw 0..255 pixels (its first
epochs show a loss near 40), so a Rescaling layer comes first; without normalisation it still
learned slowly enough to stop near 0.45 on the holdout, so each convolution is followed by batch
normalisation (and loses its bias, which the normalisation's shift replaces); and it works at
`image_size` (the registry's 32) instead of 160, where it reached a higher holdout accuracy at a
twenty-fifth of the pixels, with a lower dropout (0.1), since online augmentation already
regularises it. The saved model still
takes raw 0..255 RGB at 160x160.
"""

from __future__ import annotations

from faceproc.models.keras_env import keras

INPUT_SHAPE = (160, 160, 3)  # the face crop every model takes
DROPOUT = 0.1
BN_MOMENTUM = 0.9  # moving statistics that settle within a few hundred steps
FILTERS = (32, 64, 128)  # the notebook's


def build_cnn(num_classes: int, *, image_size: int = INPUT_SHAPE[0], dropout: float = DROPOUT,
              name: str = "cnn") -> keras.Model:
    """The CNN for `num_classes` classes; input raw RGB 0..255 at 160x160, output softmax."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    layers = keras.layers
    inputs = keras.Input(shape=INPUT_SHAPE, dtype="float32", name="image")
    x = inputs
    if image_size != INPUT_SHAPE[0]:
        x = layers.Resizing(image_size, image_size, interpolation="area", name="resize")(x)
    x = layers.Rescaling(1.0 / 255, name="rescale")(x)
    for index, filters in enumerate(FILTERS, start=1):
        x = layers.Conv2D(filters, 3, padding="valid", use_bias=False, name=f"conv{index}")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{index}")(x)
        x = layers.Activation("relu", name=f"relu{index}")(x)
        if index < len(FILTERS):
            x = layers.MaxPooling2D(pool_size=2, name=f"pool{index}")(x)
            x = layers.Dropout(dropout, name=f"dropout{index}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name=f"dropout{len(FILTERS)}")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
