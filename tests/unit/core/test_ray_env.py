"""What Ray workers start with: the TensorFlow environment the driver has."""

from __future__ import annotations

import os

import pytest

from faceproc import TF_ENV
from faceproc.core import ray_env
from tests.conftest import run_in_fresh_process

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


def test_a_process_that_joined_ray_starts_none_whatever_the_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray_env.would_start_here(None)  # the session's Ray is joined already


@pytest.mark.parametrize("env, starts", [(None, [True, True, False, False]), ("local", [True, True, False, False]),
                                         ("10.0.0.1:6379", [False, True, False, False])])
def test_a_fresh_process_starts_ray_only_when_no_cluster_is_named(env, starts):
    """would_start_here(None, "local", "auto", an address) in a process that has not joined Ray."""
    script = ("import json\nfrom faceproc.core.ray_env import would_start_here\n"
              "print(json.dumps([would_start_here(a) for a in (None, 'local', 'auto', '10.0.0.2:6379')]))")
    assert run_in_fresh_process(script, ray_address=env, timeout=120) == starts
