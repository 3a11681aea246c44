"""The installed environment: exactly one TensorFlow wheel (tf-keras needs `tensorflow` itself)."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

TENSORFLOW_WHEELS = {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos", "intel-tensorflow"}


def test_exactly_one_tensorflow_distribution_is_installed():
    installed = {(dist.metadata["Name"] or "").lower().replace("_", "-") for dist in importlib.metadata.distributions()}
    assert len(installed & TENSORFLOW_WHEELS) == 1, installed & TENSORFLOW_WHEELS


def test_the_project_asks_for_one_tensorflow_and_a_gpu_extra():
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    wanted = [req for req in project["dependencies"]
              if req.split(">")[0].split("=")[0].split("[")[0].strip().lower() in TENSORFLOW_WHEELS]
    assert len(wanted) == 1 and wanted[0].startswith("tensorflow>="), wanted
    assert any(req.startswith("tensorflow[and-cuda]") for req in project["optional-dependencies"]["gpu"])


def test_python_310_installs_get_a_toml_parser():
    """requires-python admits 3.10, which has no tomllib: the config reader needs tomli there."""
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert project["requires-python"].startswith(">=3.10")
    assert "tomli>=2; python_version < '3.11'" in project["dependencies"]
