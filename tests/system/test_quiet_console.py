"""`-v` brings back the internals a default console hides (slow).

That a default `faceproc run` prints faceproc's own lines only is asserted on every CLI run the
system tests make (tests/system/console.py: the crash-safety runs train cnn, the object-storage run
facenet), not by a run of its own here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATASET
from tests.system.console import INTERNALS, found

pytestmark = pytest.mark.slow


def _subset(root: Path, people: int, train: int, val: int) -> Path:
    """The first `people` people of the fetched dataset, `train` and `val` photos each."""
    if not (DATASET / "train").is_dir():
        pytest.fail(f"{DATASET} is missing: run `faceproc fetch-data` first")
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


def test_verbose_shows_the_internals(tmp_path):
    photos = _subset(tmp_path / "photos", people=1, train=1, val=1)
    done = _faceproc(tmp_path, "-v", "preprocess", "--input", str(photos), "--output", str(tmp_path / "out"))
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    assert found(INTERNALS, printed), printed
