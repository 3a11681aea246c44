"""The one place that imports Keras: tf-keras (the Keras 2 API) on TensorFlow.

Keras 3 breaks ``model.fit`` under ``MultiWorkerMirroredStrategy`` inside Ray Train ("Attempt to
convert a value (PerReplica...) to a Tensor"), so the project uses ``tf_keras`` with
``TF_USE_LEGACY_KERAS=1``. The variables are set with ``setdefault`` before TensorFlow is imported,
so a caller can still override them; Ray workers must get the same variables in their runtime_env.

Every module under ``faceproc.models`` does ``from faceproc.models.keras_env import keras, tf``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
