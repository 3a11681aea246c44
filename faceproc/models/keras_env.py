"""The one place that imports Keras: tf-keras (the Keras 2 API) on TensorFlow.

Keras 3 breaks ``model.fit`` under ``MultiWorkerMirroredStrategy`` inside Ray Train ("Attempt to
convert a value (PerReplica...) to a Tensor"), so the project uses ``tf_keras`` with
``TF_USE_LEGACY_KERAS=1``. ``faceproc/__init__.py`` sets it (with ``setdefault``) before anything
imports TensorFlow; Ray workers get the same variables through their runtime_env.

Every module under ``faceproc.models`` does ``from faceproc.models.keras_env import keras, tf``.
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

__all__ = ["keras", "tf"]
