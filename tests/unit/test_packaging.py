"""The installed environment: exactly one TensorFlow wheel (tf-keras needs `tensorflow` itself)."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

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


def test_requires_python_admits_no_python_the_dependencies_refuse():
    """Every direct dependency, as installed here (the versions the tests ran against), supports the
    lowest Python requires-python admits: otherwise a user on that Python gets other versions than the
    tested ones, or none (scikit-image 0.26, which alignment needs, dropped 3.10)."""
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    floors = [spec.version for spec in SpecifierSet(project["requires-python"]) if spec.operator == ">="]
    assert len(floors) == 1, project["requires-python"]
    for requirement in map(Requirement, project["dependencies"]):
        needs = importlib.metadata.metadata(requirement.name).get("Requires-Python")
        if needs:
            assert SpecifierSet(needs).contains(floors[0]), f"{requirement.name} needs Python {needs}"
