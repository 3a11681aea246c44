"""What Ray Train's controller has to import to run a faceproc training."""

from __future__ import annotations

import subprocess
import sys

import ray.cloudpickle as cloudpickle

from faceproc.train.trainer import backend

UNPICKLE = ("import pickle, sys; pickle.loads(sys.stdin.buffer.read()); "
            "print(','.join(name for name in ('tensorflow', 'ray.train.tensorflow') if name in sys.modules))")


def _imports_when_unpickled(config: object) -> str:
    """The heavy modules a fresh process imports to unpickle `config`, as Ray Train's controller does."""
    done = subprocess.run([sys.executable, "-c", UNPICKLE], input=cloudpickle.dumps(config),
                          capture_output=True, check=True)
    return done.stdout.decode().strip()


def test_a_lone_worker_backend_does_not_import_tensorflow_into_the_controller():
    from ray.train.tensorflow import TensorflowConfig

    assert _imports_when_unpickled(backend(1)) == ""
    assert isinstance(backend(2), TensorflowConfig)  # workers together need TF_CONFIG for MultiWorkerMirroredStrategy
    assert "tensorflow" in _imports_when_unpickled(backend(2)).split(",")  # what the lone worker is spared
