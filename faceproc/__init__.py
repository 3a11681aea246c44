"""faceproc: a batch face-recognition pipeline on Ray."""

import os

__version__ = "0.1.0"

# Set before anything imports TensorFlow, here and (through Ray's runtime_env) on every worker:
# tf-keras, because Keras 3 breaks model.fit under MultiWorkerMirroredStrategy in Ray Train; quiet
# C++ logs (level 2 still prints a cuInit error on every CPU-only process); and TensorFlow's oneDNN
# kernels, which its x86 wheels turn on by default only on CPUs with AVX512_VNNI/BF16 or AMX: on an
# AVX2-only CPU they train ResNet50 several times faster (bench/onednn.py, docs/benchmarks.md).
TF_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "1"}
for _key, _value in TF_ENV.items():
    os.environ.setdefault(_key, _value)
