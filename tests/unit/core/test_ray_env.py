"""What Ray workers start with: the TensorFlow environment the driver has."""

from __future__ import annotations

import os

import pytest

from faceproc import TF_ENV

pytestmark = pytest.mark.usefixtures("ray_session")


def _worker_tensorflow() -> dict:
    import tensorflow  # noqa: F401  (the worker's first import: what it reads from its environment counts)
    from tensorflow.python.util import _pywrap_util_port

    return {"env": {key: os.environ.get(key) for key in TF_ENV}, "onednn": _pywrap_util_port.IsMklEnabled()}


def test_workers_import_tensorflow_with_the_drivers_settings_and_onednn_on():
    import ray

    seen = ray.get(ray.remote(_worker_tensorflow).remote())
    assert seen["env"] == {key: os.environ[key] for key in TF_ENV}
    assert seen["env"]["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert seen["onednn"] is True
