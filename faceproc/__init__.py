"""faceproc: a batch face-recognition pipeline on Ray."""

import os

__version__ = "0.1.0"

# Set before anything imports TensorFlow, here and (through Ray's runtime_env) on every worker:
# tf-keras, because Keras 3 breaks model.fit under MultiWorkerMirroredStrategy in Ray Train, and
# quiet C++ logs (level 2 still prints a cuInit error on every CPU-only process).
TF_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
for _key, _value in TF_ENV.items():
    os.environ.setdefault(_key, _value)
