"""Online augmentation: the same variants for a seed, new ones every epoch, a face kept a face."""

from __future__ import annotations

import numpy as np

from faceproc.models.keras_env import tf
from faceproc.train.online_augment import augment_epoch, augment_face


def _faces(n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    smooth = rng.integers(40, 200, (n, 20, 20, 3)).astype(np.uint8)
    return np.stack([np.kron(face, np.ones((8, 8, 1), np.uint8)) for face in smooth]), np.arange(n) % 3


def _epoch(seed: int) -> list[np.ndarray]:
    images, labels = _faces()
    return [x.numpy() for x, _ in augment_epoch(tf.data.Dataset.from_tensor_slices((images, labels)), seed)]


def test_a_seed_repeats_exactly_and_the_next_epoch_differs():
    first, again, next_epoch = _epoch(7), _epoch(7), _epoch(8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(np.abs(a - b).mean() > 1.0 for a, b in zip(first, next_epoch))
    assert len({round(float(x.mean()), 3) for x in first}) == len(first)  # each face its own draw


def _smooth_faces(n: int = 6) -> np.ndarray:
    """A bright oval on a sloped background, placed at random: what a mild turn, shift or relighting
    keeps recognisable, unlike pixel noise, so a correlation can tell one from the other."""
    yy, xx = np.mgrid[0:160, 0:160]
    faces = []
    for cx, cy in np.random.default_rng(1).uniform(50, 110, (n, 2)):
        face = 200 * np.exp(-(((xx - cx) / 40) ** 2 + ((yy - cy) / 55) ** 2)) + 30 + 0.3 * xx
        faces.append(np.repeat(face[..., None], 3, axis=2).clip(0, 255).astype(np.uint8))
    return np.stack(faces)


def test_labels_and_shape_are_kept_and_pixels_stay_in_range():
    images, labels = _smooth_faces(), np.arange(6) % 3
    out = list(augment_epoch(tf.data.Dataset.from_tensor_slices((images, labels)), 3))
    assert [int(y) for _, y in out] == labels.tolist()
    for (x, _), original in zip(out, images):
        x = x.numpy()
        assert x.shape == original.shape and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 255.0
        # a mild change: a turned, shifted, relit (perhaps mirrored) face, not noise (about 0 here)
        gray, before = x.mean(axis=2).ravel(), original.astype(np.float32).mean(axis=2)
        kept = max(np.corrcoef(gray, view.ravel())[0, 1] for view in (before, np.fliplr(before)))
        assert 0.7 < kept and not np.allclose(x, original, atol=1.0)
        assert abs(float(x.mean()) - float(original.mean())) < 0.35 * float(original.mean())


def test_one_face_with_one_seed_is_a_pure_function():
    face = _faces(1)[0][0]
    a = augment_face(face, tf.constant([1, 2])).numpy()
    b = augment_face(face, tf.constant([1, 2])).numpy()
    c = augment_face(face, tf.constant([1, 3])).numpy()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
