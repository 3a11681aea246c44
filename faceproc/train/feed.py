"""A Ray Train worker's dataset shard (or the driver's columns) as one tf.data.Dataset per epoch.

A shard that fits the worker's memory budget is read through Ray Data once and then served from
memory with TensorFlow's own shuffle: `to_tf`'s Python generator costs about 10% of a resnet50 epoch
on a CPU worker (docs/benchmarks.md, "Training"). A larger shard streams through `to_tf` every epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceproc.models.keras_env import tf
from faceproc.train.online_augment import augment_epoch

SHUFFLE_BUFFER_ROWS = 256  # streamed shards only: rows Ray Data shuffles locally


def static_pipeline(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The worker's data is already its own shard and comes from memory: no sharding by the
    strategy, nothing for tf.data to autotune (the tuner's thread stalled epochs by up to a second
    on a small CPU node)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


class ShardFeed:
    """One epoch's batches of (feature, label) from a Ray Data shard, cached in memory when allowed,
    or from numpy columns the driver already holds (`data.Columns`)."""

    def __init__(self, shard: Any, feature: str, batch_size: int, cache: bool, shuffle: bool,
                 augment: bool = False) -> None:
        self.shard, self.feature, self.batch_size = shard, feature, batch_size
        self.cache, self.shuffle, self.augment = cache, shuffle, augment
        self.arrays: tuple[np.ndarray, np.ndarray] | None = None
        if isinstance(shard, dict):
            self.cache, self.arrays = True, (shard[feature], shard["label"])

    def epoch(self, seed: int) -> tf.data.Dataset:
        """This epoch's batches; shuffled and (with `augment`) new variants of every face per `seed`."""
        if not self.cache:
            batches = self.shard.to_tf(
                self.feature, "label", batch_size=self.batch_size,
                local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS if self.shuffle else None,
                local_shuffle_seed=seed if self.shuffle else None)
            if self.augment:
                batches = augment_epoch(batches.unbatch(), seed).batch(self.batch_size)
            return static_pipeline(batches)
        if self.arrays is None:
            self.arrays = self._read()
        features, labels = self.arrays
        dataset = tf.data.Dataset.from_tensor_slices((features, labels))
        if self.shuffle:
            dataset = dataset.shuffle(len(labels), seed=seed)
        if self.augment:
            dataset = augment_epoch(dataset, seed)
        return static_pipeline(dataset.batch(self.batch_size))

    def _read(self) -> tuple[np.ndarray, np.ndarray]:
        features, labels = [], []
        for batch in self.shard.iter_batches(batch_format="numpy", batch_size=None):
            features.append(batch[self.feature])
            labels.append(batch["label"])
        if not labels:
            raise RuntimeError("this worker's shard of the training data is empty")
        return np.concatenate(features), np.concatenate(labels)
