"""A default `faceproc run` prints faceproc's own lines only; `-v` brings the internals back (slow)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATASET, FACENET_WEIGHTS

pytestmark = pytest.mark.slow

# What TensorFlow, absl, Keras and Ray print on their own, in the driver or forwarded from a worker.
NOISE = [
    r"cudart_stub", r"cuInit", r"Unable to register cu(DNN|FFT|BLAS) factory", r"oneDNN custom operations",
    r"TensorFlow binary is optimized", r"absl::InitializeLog", r"is deprecated",
    r"compiled metrics have yet to be built", r"No training configuration found",
    r"core_worker\.cc", r"max_restarts > 0", r"Truncating long operator name", r"Progress bars disabled",
    r"\bTip: ", r"Registered dataset logger", r"Starting execution of Dataset", r"Execution plan of Dataset",
    r"Running Dataset", r"execution finished in", r"Started a local Ray instance", r"View the dashboard at",
    r"Token authentication", r"Setting up process group", r"Requesting resources", r"training worker group",
    r"world_rank=", r"RAY_TRAIN_V2_ENABLED", r"Ray deduplicates logs", r"\(pid=",
    r"DeprecationWarning", r"FutureWarning", r"UserWarning", r"Traceback", r"Exception in thread",
]
# Lines a default run hides that `-v` shows: Ray's startup banner, TensorFlow's load-time lines.
INTERNALS = [r"Started a local Ray instance", r"oneDNN custom operations", r"cudart_stub"]


def _subset(root: Path, people: int, train: int, val: int) -> Path:
    """The first `people` people of the fetched dataset, `train` and `val` photos each."""
    if not (DATASET / "train").is_dir() or not FACENET_WEIGHTS.is_file():
        pytest.fail(f"{DATASET} or {FACENET_WEIGHTS} is missing: run `faceproc fetch-data` first")
    for person in sorted(p.name for p in (DATASET / "train").iterdir() if p.is_dir())[:people]:
        for split, count in (("train", train), ("val", val)):
            (root / split / person).mkdir(parents=True)
            for photo in sorted((DATASET / split / person).iterdir())[:count]:
                shutil.copy(photo, root / split / person / photo.name)
    return root


def _faceproc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "FACEPROC_VERBOSE")}
    return subprocess.run([sys.executable, "-m", "faceproc.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900, check=False)


def _found(patterns: list[str], text: str) -> list[str]:
    return [line for line in text.splitlines() if any(re.search(pattern, line) for pattern in patterns)]


def test_default_run_prints_only_faceproc_lines(tmp_path):
    photos = _subset(tmp_path / "photos", people=2, train=4, val=2)
    done = _faceproc(tmp_path, "run", "--input", str(photos), "--output", str(tmp_path / "out"),
                     "--models", "cnn,facenet", "--epochs", "2",
                     "--set", f"train.facenet_weights={FACENET_WEIGHTS}",
                     "--set", "preprocess.detector_actors=1", "--set", "preprocess.augment_copies=0")  # cheaper
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    for stage in ("[1/4] fetch", "[2/4] preprocess", "[3/4] train", "[4/4] evaluate"):
        assert stage in done.stdout
    assert "cnn epoch 2/2" in done.stdout and "facenet epoch 2/2" in done.stdout  # the progress stays
    assert re.search(r"^model\s+status\s+n\s+accuracy", done.stdout, re.MULTILINE)
    assert re.search(r"^cnn\s+ok", done.stdout, re.MULTILINE) and re.search(r"^facenet\s+ok", done.stdout, re.MULTILINE)
    noise = _found(NOISE, printed)
    assert not noise, "\n".join(noise)


def test_verbose_shows_the_internals(tmp_path):
    photos = _subset(tmp_path / "photos", people=1, train=1, val=1)
    done = _faceproc(tmp_path, "-v", "preprocess", "--input", str(photos), "--output", str(tmp_path / "out"))
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert _found(INTERNALS, printed), printed
