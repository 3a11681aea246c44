"""Connect to Ray the same way on a laptop and on a cluster.

On a laptop Ray starts inside the process; under `ray job submit` (or with RAY_ADDRESS set, or a
`ray start` head running) the job joins that cluster. Workers get the environment TensorFlow needs:
tf-keras instead of Keras 3 (Keras 3 breaks under MultiWorkerMirroredStrategy) and quiet C++ logs.
"""

from __future__ import annotations

import logging
import os

WORKER_ENV = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}

for _key, _value in WORKER_ENV.items():
    os.environ.setdefault(_key, _value)

import ray  # noqa: E402  (after the environment above, so local workers inherit it)


def init_ray(address: str | None = None) -> None:
    """Join `address` (or a running cluster) if there is one, otherwise start Ray locally."""
    if ray.is_initialized():
        return
    runtime_env = {"env_vars": dict(WORKER_ENV)}
    address = address or os.environ.get("RAY_ADDRESS")
    logging.getLogger("ray").setLevel(logging.WARNING)
    if address:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING)
        return
    try:
        ray.init(address="auto", runtime_env=runtime_env, logging_level=logging.WARNING)
    except ConnectionError:
        ray.init(runtime_env=runtime_env, include_dashboard=False, logging_level=logging.WARNING)


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 1.0))


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))
