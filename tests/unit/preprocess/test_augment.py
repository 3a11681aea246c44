"""faceproc.augment: deterministic, shape-preserving augmentation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from faceproc.preprocess import augment
from faceproc.preprocess.augment import AugmentParams, apply_augment, augment_face, augment_params

SHA_A = hashlib.sha256(b"photo a").hexdigest()
SHA_B = hashlib.sha256(b"photo b").hexdigest()


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A structured 160x160 RGB image: gradients plus an off-centre block, so every transform shows."""
    y, x = np.mgrid[0:160, 0:160]
    image = np.stack([x * 255 // 159, y * 255 // 159, (x + y) * 255 // 318], axis=-1).astype(np.uint8)
    image[30:70, 20:50] = (250, 20, 20)
    return image


def test_same_inputs_give_identical_bytes(face):
    first = augment_face(face, 0, SHA_A, 1)
    second = augment_face(face.copy(), 0, SHA_A, 1)
    assert first.tobytes() == second.tobytes()


def test_input_is_not_modified(face):
    before = face.copy()
    augment_face(face, 3, SHA_A, 2)
    assert np.array_equal(face, before)


@pytest.mark.parametrize("other", [(0, SHA_A, 2), (1, SHA_A, 1), (0, SHA_B, 1)])
def test_different_copy_seed_or_file_differ(face, other):
    assert not np.array_equal(augment_face(face, 0, SHA_A, 1), augment_face(face, *other))


def test_copies_differ_from_the_original(face):
    for index in (1, 2, 3):
        assert not np.array_equal(augment_face(face, 0, SHA_A, index), face)


@pytest.mark.parametrize("shape", [(160, 160, 3), (100, 80, 3), (64, 64)])
def test_shape_and_dtype_preserved(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    out = augment_face(image, 0, SHA_A, 1)
    assert out.shape == image.shape and out.dtype == np.uint8


def test_parameters_stay_in_their_ranges_and_flip_about_half_the_time():
    draws = [augment_params(7, SHA_A, i) for i in range(400)]
    assert all(abs(p.angle) <= augment.MAX_ROTATION_DEG for p in draws)
    assert all(abs(p.zoom - 1) <= augment.MAX_ZOOM for p in draws)
    assert all(abs(p.shift_x) <= augment.MAX_SHIFT and abs(p.shift_y) <= augment.MAX_SHIFT for p in draws)
    assert all(augment.BRIGHTNESS_RANGE[0] <= p.brightness <= augment.BRIGHTNESS_RANGE[1] for p in draws)
    assert 150 < sum(p.flip for p in draws) < 250
    # the ranges are actually used, not collapsed near zero
    assert max(abs(p.angle) for p in draws) > 0.8 * augment.MAX_ROTATION_DEG


def test_params_are_the_documented_function_of_seed_hash_and_index():
    rng = np.random.default_rng([5, int(SHA_B[:16], 16), 3])
    assert augment_params(5, SHA_B, 3).angle == rng.uniform(-augment.MAX_ROTATION_DEG, augment.MAX_ROTATION_DEG)


def test_identity_parameters_return_the_input(face):
    identity = AugmentParams(angle=0.0, zoom=1.0, shift_x=0.0, shift_y=0.0, flip=False, brightness=1.0)
    assert np.array_equal(apply_augment(face, identity), face)


def test_flip_mirrors_and_brightness_scales(face):
    flipped = apply_augment(face, AugmentParams(0.0, 1.0, 0.0, 0.0, True, 1.0))
    assert np.array_equal(flipped, face[:, ::-1])
    darker = apply_augment(face, AugmentParams(0.0, 1.0, 0.0, 0.0, False, 0.5))
    assert np.array_equal(darker, np.rint(face.astype(np.float32) * 0.5).astype(np.uint8))
    brighter = apply_augment(face, AugmentParams(0.0, 1.0, 0.0, 0.0, False, 1.2))
    assert brighter.max() == 255  # clipped, not wrapped around


def test_borders_are_reflected_not_black(face):
    shifted = apply_augment(np.full((50, 50, 3), 180, np.uint8), AugmentParams(10.0, 0.9, 0.08, -0.08, False, 1.0))
    assert np.all(shifted == 180)


@pytest.mark.parametrize("bad", ["", "xyz", "abc"])
def test_bad_hash_is_rejected(face, bad):
    with pytest.raises(ValueError):
        augment_face(face, 0, bad, 1)


def test_bad_arrays_are_rejected():
    with pytest.raises(ValueError):
        augment_face(np.zeros((10, 10, 3), np.float32), 0, SHA_A, 1)
    with pytest.raises(ValueError):
        augment_face(np.zeros((0, 0, 3), np.uint8), 0, SHA_A, 1)
