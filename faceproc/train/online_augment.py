"""Online augmentation: every epoch draws a new variant of every training face, inside tf.data.

The draws are stateless (`tf.image.stateless_*` and a seeded projective transform), keyed by the
epoch's seed and the face's position in the shuffled epoch, so a run repeats exactly for a seed and
the next epoch sees other variants. Ranges match the stored copies of `preprocess.augment`.
"""

from __future__ import annotations

import math

from faceproc.models.keras_env import tf
from faceproc.preprocess.augment import BRIGHTNESS_RANGE, MAX_ROTATION_DEG, MAX_SHIFT, MAX_ZOOM

CONTRAST_RANGE = (0.8, 1.2)


def augment_face(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """One HxWx3 face (uint8 or float 0..255) flipped, rotated, zoomed, shifted, brightened and
    contrasted by draws from `seed` (shape [2], int); float32 0..255 out."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
    x = tf.image.stateless_random_flip_left_right(tf.cast(image, tf.float32), seeds[0])
    x = _random_affine(x, seeds[1])
    factor = tf.random.stateless_uniform([], seeds[2], *BRIGHTNESS_RANGE)
    x = tf.image.stateless_random_contrast(x * factor, *CONTRAST_RANGE, seed=seeds[3])
    return tf.clip_by_value(x, 0.0, 255.0)


def _random_affine(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Rotation, zoom and shift about the centre, borders reflected (as `preprocess.augment`)."""
    draws = tf.random.stateless_uniform([4], seed, -1.0, 1.0)
    angle = draws[0] * MAX_ROTATION_DEG * math.pi / 180.0
    zoom = 1.0 + draws[1] * MAX_ZOOM
    size = tf.cast(tf.shape(image)[:2], tf.float32)
    height, width = size[0], size[1]
    shift_x, shift_y = draws[2] * MAX_SHIFT * width, draws[3] * MAX_SHIFT * height
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # The transform maps output pixels to input pixels: the inverse of rotate-zoom-shift.
    transform = tf.stack([cos, -sin, cx - cos * (cx + shift_x) + sin * (cy + shift_y),
                          sin, cos, cy - sin * (cx + shift_x) - cos * (cy + shift_y), 0.0, 0.0])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    return out[0]


def augment_epoch(dataset: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """(face, label) elements augmented with per-element seeds (seed, position in the epoch)."""
    def augment(index: tf.Tensor, element: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image, label = element
        return augment_face(image, tf.stack([tf.constant(seed, tf.int64), index])), label

    return dataset.enumerate().map(augment)
