"""The reference notebook's small CNN (93,893 parameters for five classes).

Rescaling(1/255) -> Conv2D(32, 3, valid, relu) -> MaxPool(2) -> Dropout(0.5)
-> Conv2D(64, 3, valid, relu) -> MaxPool(2) -> Dropout(0.5) -> Conv2D(128, 3, valid, relu)
-> GlobalAveragePooling -> Dropout(0.5) -> Dense(classes, softmax).

The notebook fed it pixel values 0..255 with no scaling (its first epochs show a loss near 40); the
Rescaling layer in front is the only change, so the saved model still takes raw 0..255 RGB.
Registry defaults: 30 epochs, batch 16, Adam 1e-3 (a few seconds per epoch on two cores for ~280
faces).
"""

from __future__ import annotations

from faceproc.models.keras_env import keras

INPUT_SHAPE = (160, 160, 3)
DROPOUT = 0.5  # the notebook's rate after each block


def build_cnn(num_classes: int, *, dropout: float = DROPOUT, name: str = "cnn") -> keras.Model:
    """The notebook CNN for `num_classes` classes; input raw RGB 0..255, output softmax."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    layers = keras.layers
    inputs = keras.Input(shape=INPUT_SHAPE, dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = layers.Conv2D(32, 3, padding="valid", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(pool_size=2, name="pool1")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Conv2D(64, 3, padding="valid", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(pool_size=2, name="pool2")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    x = layers.Conv2D(128, 3, padding="valid", activation="relu", name="conv3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout3")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
