"""Deterministic augmentation of face crops for the training split.

Each augmented copy is a pure function of (seed, the source file's SHA-256, copy index): a rerun,
another worker or another machine makes the same bytes, and a changed photo gets new copies.
The geometry is one cv2.warpAffine (rotation, zoom, shift, optional mirror, reflected borders);
brightness is applied after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Parameter ranges, in the spirit of the reference notebook's Keras ImageDataGenerator, kept mild
# so a face stays a recognisable, mostly-in-frame face:
MAX_ROTATION_DEG = 10.0  # rotation drawn uniformly from [-10, +10] degrees
MAX_ZOOM = 0.10  # scale drawn uniformly from [0.9, 1.1]
MAX_SHIFT = 0.08  # shift per axis drawn uniformly from [-8%, +8%] of that side
FLIP_PROBABILITY = 0.5  # horizontal mirror; faces are roughly left-right symmetric
BRIGHTNESS_RANGE = (0.8, 1.2)  # pixel values multiplied by a factor from this range, then clipped


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation parameters."""

    angle: float  # degrees, counter-clockwise
    zoom: float  # > 1 enlarges
    shift_x: float  # fraction of the width
    shift_y: float  # fraction of the height
    flip: bool  # horizontal mirror
    brightness: float  # multiplicative


def augment_params(seed: int, sha256: str, copy_index: int) -> AugmentParams:
    """The parameters of copy `copy_index` of the file with hash `sha256` under `seed`."""
    if seed < 0 or copy_index < 0:
        raise ValueError(f"seed and copy_index must be >= 0, got seed={seed}, copy_index={copy_index}")
    try:
        file_key = int(sha256[:16], 16)
    except (TypeError, ValueError):
        raise ValueError(f"sha256 must be a hex digest, got {sha256!r}") from None
    if len(sha256) < 16:
        raise ValueError(f"sha256 must be a hex digest of at least 16 characters, got {sha256!r}")
    rng = np.random.default_rng([int(seed), file_key, int(copy_index)])
    # The draw order is part of the output contract: changing it changes every augmented copy.
    angle = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)
    zoom = rng.uniform(1.0 - MAX_ZOOM, 1.0 + MAX_ZOOM)
    shift_x, shift_y = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=2)
    flip = rng.random() < FLIP_PROBABILITY
    brightness = rng.uniform(*BRIGHTNESS_RANGE)
    return AugmentParams(float(angle), float(zoom), float(shift_x), float(shift_y), bool(flip), float(brightness))


def apply_augment(face: np.ndarray, params: AugmentParams) -> np.ndarray:
    """`face` (HxWx3 or HxW uint8) transformed by `params`; same shape, uint8."""
    if not isinstance(face, np.ndarray) or face.dtype != np.uint8 or face.ndim not in (2, 3) or face.size == 0:
        shape = getattr(face, "shape", None)
        raise ValueError(f"expected a non-empty HxW(x3) uint8 array, got {type(face).__name__} {shape}")
    height, width = face.shape[:2]
    center = ((width - 1) / 2.0, (height - 1) / 2.0)
    matrix = np.vstack([cv2.getRotationMatrix2D(center, params.angle, params.zoom), [0.0, 0.0, 1.0]])
    matrix[0, 2] += params.shift_x * width
    matrix[1, 2] += params.shift_y * height
    if params.flip:  # mirror first, then rotate/zoom/shift
        mirror = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        matrix = matrix @ mirror
    warped = cv2.warpAffine(
        np.ascontiguousarray(face), matrix[:2], (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    brightened = warped.astype(np.float32) * np.float32(params.brightness)
    return np.clip(np.rint(brightened), 0, 255).astype(np.uint8).reshape(face.shape)


def augment_face(face: np.ndarray, seed: int, sha256: str, copy_index: int) -> np.ndarray:
    """Augmented copy `copy_index` (the pipeline uses augment_index 1, 2, ...) of `face`,
    determined by (seed, sha256, copy_index) alone. Same shape as `face`, uint8."""
    return apply_augment(face, augment_params(seed, sha256, copy_index))
