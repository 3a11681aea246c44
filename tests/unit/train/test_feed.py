"""A worker's shard as tf.data: cached and streamed epochs hold the same rows, shuffled per seed."""

from __future__ import annotations

import numpy as np
import pytest

from faceproc.train.feed import ShardFeed
from faceproc.train.trainer import fits_worker_cache as _fits_worker_cache

pytestmark = pytest.mark.usefixtures("ray_session")

ROWS = 40


def _faces():
    import ray.data

    images = np.arange(ROWS, dtype=np.uint8).repeat(4 * 4 * 3).reshape(ROWS, 4, 4, 3)
    return ray.data.from_numpy(images).map_batches(
        lambda batch: {"image": batch["data"], "label": batch["data"][:, 0, 0, 0].astype(np.int32)})


def _epoch_rows(feed: ShardFeed, seed: int) -> tuple[list[int], list[int]]:
    images, labels = [], []
    for image, label in feed.epoch(seed):
        assert image.shape[1:] == (4, 4, 3) and image.shape[0] <= 16
        images += image.numpy()[:, 0, 0, 0].tolist()
        labels += label.numpy().tolist()
    return images, labels


@pytest.mark.parametrize("cache", [True, False])
def test_every_epoch_holds_each_row_once_with_its_label(cache):
    feed = ShardFeed(_faces().materialize().iterator(), "image", 16, cache=cache, shuffle=True)
    for seed in (0, 1):
        images, labels = _epoch_rows(feed, seed)
        assert images == labels and sorted(images) == list(range(ROWS))


def test_cached_epochs_are_shuffled_by_seed_and_holdout_keeps_its_order():
    shuffled = ShardFeed(_faces().materialize().iterator(), "image", 16, cache=True, shuffle=True)
    first, again, other = (_epoch_rows(shuffled, seed)[0] for seed in (3, 3, 4))
    assert first == again and first != other and first != list(range(ROWS))
    ordered = ShardFeed(_faces().materialize().iterator(), "image", 16, cache=True, shuffle=False)
    assert _epoch_rows(ordered, 3)[0] == list(range(ROWS))


def test_only_materialized_shares_within_the_budget_are_cached():
    faces = _faces().materialize()
    size_mb = faces.size_bytes() / 2**20
    assert _fits_worker_cache(1, workers=2, fit=faces, holdout=faces)  # 40 tiny rows: far below 1 MB
    assert not _fits_worker_cache(0, workers=1, fit=faces, holdout=None) and size_mb > 0
    assert not _fits_worker_cache(2048, workers=1, fit=_faces(), holdout=None)  # size unknown: stream


@pytest.mark.parametrize("cache", [True, False])
def test_augmented_epochs_keep_every_label_and_repeat_per_seed(cache):
    feed = ShardFeed(_faces().materialize().iterator(), "image", 16, cache=cache, shuffle=True, augment=True)

    def epoch(seed: int) -> tuple[np.ndarray, list[int]]:
        images, labels = zip(*((x.numpy(), y.numpy()) for x, y in feed.epoch(seed)))
        return np.concatenate(images), np.concatenate(labels).tolist()

    first, again, other = epoch(5), epoch(5), epoch(6)
    assert sorted(first[1]) == list(range(ROWS)) and first[0].dtype == np.float32
    assert first[1] == again[1] and np.array_equal(first[0], again[0])  # the same seed, the same epoch
    order = np.argsort(first[1]), np.argsort(other[1])
    assert not np.array_equal(first[0][order[0]], other[0][order[1]])  # the next epoch, other variants
