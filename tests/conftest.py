"""Shared fixtures: test images are generated on the fly, never committed as binaries."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image


def closed_port() -> int:
    """A loopback port nothing listens on: bound, read and closed again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def encode(im: Image.Image, fmt: str, **save: Any) -> bytes:
    """The bytes of `im` saved as `fmt`."""
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def make_image(
    fmt: str, size: tuple[int, int] = (64, 48), color: Any = (255, 0, 0), mode: str = "RGB", **save: Any
) -> bytes:
    """A solid `color` image of `size` (width, height) in `mode`, saved as `fmt`."""
    return encode(Image.new(mode, size, color), fmt, **save)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None = None) -> bytes:
    """A PNG written by hand, for what Pillow cannot save (48-bit RGB) or must not allocate (huge sizes).

    `rows` is the unfiltered scanline data without filter bytes; None writes a header-only
    image whose IDAT holds one empty scanline, so the file stays tiny whatever it declares.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    if rows is None:
        raw = b"\x00"
    else:
        channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
        stride = (width * channels * bit_depth + 7) // 8
        raw = b"".join(b"\x00" + rows[i * stride : (i + 1) * stride] for i in range(height))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


@pytest.fixture
def image_bytes() -> Callable[..., bytes]:
    """Factory fixture: image_bytes(fmt, size=(w, h), color=..., mode="RGB", **save_options)."""
    return make_image


@pytest.fixture
def png_by_hand() -> Callable[..., bytes]:
    """Factory fixture: png_by_hand(width, height, bit_depth, color_type, rows=None)."""
    return raw_png


@pytest.fixture
def encode_image() -> Callable[..., bytes]:
    """Factory fixture: encode_image(pil_image, fmt, **save_options) -> bytes."""
    return encode


REPO = Path(__file__).resolve().parent.parent
DATASET = REPO / "data" / "5-celebrity-faces-dataset"
FACENET_WEIGHTS = REPO / "models" / "facenet_keras.h5"


def run_in_fresh_process(script: str, ray_address: str | None = None, timeout: int = 600) -> Any:
    """Run `script` in a new Python process that has joined no Ray ($RAY_ADDRESS `ray_address`, else
    unset), as a user's command starts; the JSON it prints last."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    if ray_address is not None:
        env["RAY_ADDRESS"] = ray_address
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def run_bound_by_permissions(argv: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `python ARGV` as a user whom file permissions bind: as root, whom they do not, under
    setpriv without the two capabilities that override them."""
    command = [sys.executable, *argv]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root, and no setpriv to give up the capabilities that override permissions")
        drop = "-dac_override,-dac_read_search"
        command = [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole test session: starting Ray costs seconds."""
    from faceproc.core.ray_env import init_ray

    init_ray()
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="session")
def dataset_dir() -> Path:
    """The fetched 5 Celebrity Faces photos (`faceproc fetch-data`, run by `make test`)."""
    if not (DATASET / "train").is_dir():
        pytest.fail(f"{DATASET} is missing: run `faceproc fetch-data` first (make test does)")
    return DATASET


def write_face_shards(out: Path, people: dict[str, list[tuple[int, int, int]]], split: str = "train",
                      run_id: str = "20260101T000000Z-test00", copies: int = 3, first: int = 0) -> None:
    """A published OUT with synthetic face rows: for each person, one photo per colour (numbered from
    `first`), each row a 160x160 image of that colour with noise; a manifest lists every photo as ok."""
    import numpy as np
    import pyarrow as pa

    from faceproc.core import storage
    from faceproc.core.images import encode_png
    from faceproc.core.schema import FACE_SCHEMA, MANIFEST_SCHEMA

    rng = np.random.default_rng(0)
    rows, manifest = [], []
    for label_id, (person, colours) in enumerate(sorted(people.items())):
        for n, colour in enumerate(colours, start=first):
            path, sha = f"/photos/{split}/{person}/{n}.jpg", f"{person}{n}".ljust(64, "0")
            for index in range(copies):
                noise = rng.integers(-20, 20, (160, 160, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                rows.append({"image": encode_png(pixels), "label": person, "label_id": label_id,
                             "split": split, "source_path": path, "source_sha256": sha,
                             "box": [0, 0, 160, 160], "confidence": 0.99, "faces_found": 1,
                             "augment_index": index, "run_id": run_id})
            manifest.append({"path": path, "sha256": sha, "split": split, "label": person, "status": "ok",
                             "reason": None, "face_rows": copies, "leakage": False, "run_id": run_id})
    storage.write_table_atomic(str(out / "shards" / split / f"{run_id}.00000.parquet"),
                               pa.Table.from_pylist(rows, schema=FACE_SCHEMA))
    previous = storage.read_table(str(out / "manifest.parquet")).to_pylist() if (out / "manifest.parquet").exists() else []
    storage.write_table_atomic(str(out / "manifest.parquet"),
                               pa.Table.from_pylist(previous + manifest, schema=MANIFEST_SCHEMA))


@pytest.fixture(scope="session")
def real_out(tmp_path_factory, ray_session, dataset_dir) -> Path:
    """The fetched dataset preprocessed once per test session (slow tests share it read-only)."""
    from faceproc.config import Config
    from faceproc.preprocess.run import run_preprocess

    out = tmp_path_factory.mktemp("real") / "out"
    run_preprocess(Config(input=str(dataset_dir), output=str(out)))
    return out


@pytest.fixture(scope="session")
def pipeline(real_out, dataset_dir, tmp_path_factory):
    """`faceproc run` on `real_out` (resnet50 models for one epoch, the others at their defaults, offline
    for ImageNet weights), once per session: (config, PipelineResult). Later readers share it read-only."""
    from faceproc.config import Config
    from faceproc.pipeline import run_pipeline

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras")))  # no cached ImageNet weights
        patch.setenv("FACEPROC_IMAGENET_WEIGHTS_URL", "http://127.0.0.1:9/resnet50_notop.h5")
        config = Config(input=str(dataset_dir), output=str(real_out))
        config.train.model_epochs = {"resnet50": 1, "resnet50_imagenet": 1}
        config.models_dir = str(tmp_path_factory.mktemp("empty-models"))
        config.train.facenet_weights = str(FACENET_WEIGHTS)
        yield config, run_pipeline(config)


def train_tiny_cnn(model_dir: Path, classes: list[str], seed: int = 0) -> None:
    """The notebook CNN fitted for one epoch on a handful of random faces, saved like training does."""
    import json

    import numpy as np

    from faceproc.models.cnn import build_cnn
    from faceproc.models.keras_env import keras, tf

    tf.random.set_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(2 * len(classes), 160, 160, 3)).astype(np.float32)
    y = np.arange(len(x)) % len(classes)
    model = build_cnn(len(classes))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(model_dir / "model.keras"))
    (model_dir / "classes.json").write_text(json.dumps(classes))
    (model_dir / "result.json").write_text(
        json.dumps({"model": model_dir.name, "status": "ok", "reason": None, "train_seconds": 1.0})
    )


@pytest.fixture(autouse=True)
def _no_model_saved_by_an_earlier_test() -> Iterator[None]:
    """A model a test saved is not handed to the next test's load (`ModelArtifact.load` serves the
    models its own process just saved): each test reads models from their files unless it saved them."""
    yield
    import sys

    artifact = sys.modules.get("faceproc.inference.artifact")
    if artifact is not None:
        artifact.release_saved_models()


LONG_MODULES = {"test_crash_safety.py", "test_jobs.py"}  # real process kills, a real `ray start` head


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the multi-minute process-kill and job-submission modules `long` (`make test-long`)."""
    for item in items:
        if item.path.name in LONG_MODULES:
            item.add_marker(pytest.mark.long)
