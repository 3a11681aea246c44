"""faceproc on object storage: a real S3 API (moto's standalone server) on loopback, s3:// in and out.

The server is a separate process on a free port; `AWS_ENDPOINT_URL` points pyarrow at it, in the
test process and in every faceproc run (each a CLI subprocess with a local Ray of its own, so its
workers inherit the endpoint, as they would from a cluster's environment). Every run that succeeds
must also print faceproc's own lines only (tests/system/console.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from faceproc.core import layout, storage
from faceproc.core.lock import LockedError, output_lock, read_lease
from faceproc.core.manifest import load_manifest
from faceproc.core.shards import iter_live_faces
from tests.system.console import assert_quiet, assert_quiet_run
from tests.system.test_crash_safety import KILL_AT_BOOTSTRAP, KILL_AT_ENV

pytestmark = pytest.mark.slow

PEOPLE = ("ben_afflek", "madonna", "mindy_kaling")
TRAIN_PHOTOS, VAL_PHOTOS = 4, 2
BUCKET = "faceproc-test"
RUN_TIMEOUT = 1200  # seconds
ROOT = Path(__file__).resolve().parents[2]  # runs start here, where models/ holds FaceNet's weights


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """A moto S3 server on loopback with one bucket; yields the environment that points at it."""
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"moto_server did not start on port {port}")
                time.sleep(0.2)
        pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], scheme="http",
                          allow_bucket_creation=True).create_dir(BUCKET)
        yield env
    finally:
        server.kill()
        server.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def photos(tmp_path_factory, dataset_dir) -> Path:
    """3 people x (4 train + 2 val) real photos and one broken file, on local disk."""
    root = tmp_path_factory.mktemp("s3-photos")
    for person in PEOPLE:
        for split, count in (("train", TRAIN_PHOTOS), ("val", VAL_PHOTOS)):
            (root / split / person).mkdir(parents=True)
            for src in sorted((dataset_dir / split / person).iterdir())[:count]:
                shutil.copy(src, root / split / person / src.name)
    (root / "train" / "madonna" / "broken.jpg").write_bytes(b"not a photo\n" * 50)
    return root


def _upload(local: Path, uri: str) -> None:
    fs, path = storage.resolve(uri)
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def _faceproc(env: dict[str, str], *args: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    run_env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env, "PYTHONUNBUFFERED": "1"}
    if kill_at:
        run_env[KILL_AT_ENV] = kill_at
        argv = [sys.executable, "-c", KILL_AT_BOOTSTRAP, *args]
    else:
        argv = [sys.executable, "-m", "faceproc.cli", *args]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env=run_env, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its local Ray is left
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(argv, proc.returncode, output)


def _live_paths(out: str, split: str) -> list[str]:
    """Read in this process, without Ray: the session's Ray may predate the S3 endpoint."""
    return sorted(path for table in iter_live_faces(out, split, ["source_path"])
                  for path in table.column("source_path").to_pylist())


def _assert_accounted(out: str, input_uri: str, photos: Path) -> None:
    """Every input file in the manifest once; every ok file's face row live exactly once."""
    manifest = load_manifest(out)
    expected = sorted(f"{input_uri}/{p.relative_to(photos).as_posix()}" for p in photos.rglob("*") if p.is_file())
    assert sorted(manifest.column("path").to_pylist()) == expected
    for split in ("train", "val"):
        ok = sorted(r["path"] for r in manifest.to_pylist() if r["status"] == "ok" and r["split"] == split)
        assert _live_paths(out, split) == ok


def test_run_rerun_and_predict_on_s3(s3_env, photos):
    input_uri, out = f"s3://{BUCKET}/run/in", f"s3://{BUCKET}/run/out"
    _upload(photos, input_uri)

    first = _faceproc(s3_env, "run", "--input", input_uri, "--output", out, "--models", "facenet")
    assert first.returncode == 0, first.stdout[-4000:]
    assert_quiet_run(first.stdout, ["facenet"])
    _assert_accounted(out, input_uri, photos)
    assert read_lease(out) is None
    accuracy = {row["model"]: row for row in storage.read_json(layout.report_file(out, layout.ACCURACY_JSON))}
    assert accuracy["facenet"]["status"] == "ok" and accuracy["facenet"]["accuracy"] >= 5 / 6
    assert storage.exists(layout.report_file(out, layout.REPORT_HTML))
    manifest = load_manifest(out)

    again = _faceproc(s3_env, "preprocess", "--input", input_uri, "--output", out)
    assert again.returncode == 0, again.stdout[-4000:]
    assert_quiet(again.stdout)
    assert "preprocess: nothing to do: all" in again.stdout, again.stdout[-4000:]
    assert load_manifest(out).equals(manifest)

    pointer = storage.read_json(layout.model_pointer(out, "facenet"))  # no rename on S3: a pointer
    assert storage.exists(layout.model_version_dir(out, "facenet", pointer["version"]) + "/model.keras")
    photo = sorted((photos / "val" / "madonna").iterdir())[0]
    named = _faceproc(s3_env, "predict", "--output", out, "--json", str(photo))
    assert named.returncode == 0, named.stdout[-4000:]
    assert_quiet(named.stdout)
    faces = [json.loads(line) for line in named.stdout.splitlines() if line.startswith("{")]
    assert faces and faces[0]["person"] == "madonna", named.stdout[-2000:]


def test_runs_killed_while_publishing_to_s3_leave_it_readable_and_the_next_run_completes(s3_env, photos):
    """Two runs in a row SIGKILLed while they publish (right after the first shard is in place, then
    right after rejects.parquet): the manifest, which is the commit, still names nothing; a dead run's
    lease keeps a second run out until it expires; then a run completes and leaves no staging."""
    input_uri, out = f"s3://{BUCKET}/crash/in", f"s3://{BUCKET}/crash/out"
    _upload(photos, input_uri)
    for kill_at in ("move:1", "write:rejects.parquet"):
        killed = _faceproc(s3_env, "preprocess", "--input", input_uri, "--output", out, kill_at=kill_at)
        assert killed.returncode == -signal.SIGKILL, f"never reached {kill_at}:\n{killed.stdout[-4000:]}"
        assert load_manifest(out).num_rows == 0, kill_at  # the manifest is the commit: nothing is live yet
        assert _live_paths(out, "train") == [], kill_at

        lease = read_lease(out)  # the dead run's lease outlives it until it expires
        assert lease is not None and lease["expires"] > time.time(), kill_at
        if kill_at == "move:1":
            blocked = _faceproc(s3_env, "preprocess", "--input", input_uri, "--output", out)
            assert blocked.returncode != 0 and "another faceproc run is using" in blocked.stdout, \
                blocked.stdout[-3000:]
        storage.write_json_atomic(layout.lease(out), {**lease, "expires": time.time() - 1})  # as if TTL passed

    finished = _faceproc(s3_env, "preprocess", "--input", input_uri, "--output", out)
    assert finished.returncode == 0, finished.stdout[-4000:]
    assert_quiet(finished.stdout)
    _assert_accounted(out, input_uri, photos)
    leftovers = [info.path for info in storage.resolve(out)[0].get_file_info(
        pafs.FileSelector(storage.resolve(out)[1], recursive=True)) if "_staging" in info.path or ".tmp-" in info.path]
    assert leftovers == []
    assert read_lease(out) is None  # released by the run that finished


def test_a_second_run_on_the_same_s3_output_waits_for_the_lease(s3_env):
    out = f"s3://{BUCKET}/lease/out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from faceproc.core.lock import output_lock\n"
        f"with output_lock({out!r}):\n    print('held', flush=True); time.sleep(4)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, **s3_env})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert read_lease(out)["holder"].startswith(f"pid {holder.pid} ")
        with pytest.raises(LockedError, match=rf"another faceproc run is using {out} \(pid {holder.pid} "):
            with output_lock(out):
                pass
        started = time.monotonic()
        with output_lock(out, wait_seconds=60):
            assert read_lease(out)["holder"].startswith(f"pid {os.getpid()} ")
        assert time.monotonic() - started > 1  # it waited for the holder to let go
    finally:
        holder.kill()
        holder.wait()
    assert read_lease(out) is None


def test_an_output_bucket_that_does_not_exist_is_one_line(s3_env, photos, capsys):
    from faceproc.cli import main

    assert main(["preprocess", "--input", str(photos), "--output", "s3://no-such-bucket/out"]) == 1
    printed = capsys.readouterr().err
    assert printed.startswith("faceproc: error: cannot write to s3://no-such-bucket/out: Bucket 'no-such-bucket'")
    assert printed.count("\n") == 1, printed


def test_a_model_on_s3_is_published_by_its_pointer(s3_env):
    """Files go into a version folder of their own; current.json, written last, makes it the model.
    A version left by a run that died before its pointer is never read, and the next save removes it."""
    from faceproc.inference.artifact import ModelArtifact, TrainedFiles
    from faceproc.models.keras_env import keras

    out = f"s3://{BUCKET}/pointer/out"

    def trained(classes: list[str]) -> TrainedFiles:
        inputs = keras.Input(shape=(8, 8, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        return TrainedFiles(keras.Model(inputs, keras.layers.Dense(len(classes), activation="softmax")(pooled)),
                            classes, {"loss": [1.0]})

    ModelArtifact(out, "cnn").save({"status": "ok"}, {}, trained(["a", "b"]))
    first = storage.read_json(layout.model_pointer(out, "cnn"))["version"]
    assert storage.list_dirs(layout.model_versions_root(out, "cnn")) == [first]
    assert ModelArtifact(out, "cnn").classes() == ["a", "b"]

    dead = layout.model_version_dir(out, "cnn", "dead00000000")  # a run killed before its pointer
    storage.write_json_atomic(storage.join(dead, layout.CLASSES_FILE), ["x"])
    assert ModelArtifact(out, "cnn").classes() == ["a", "b"]
    ModelArtifact(out, "cnn").check_usable()

    ModelArtifact(out, "cnn").save({"status": "ok"}, {}, trained(["a", "b", "c"]))
    second = storage.read_json(layout.model_pointer(out, "cnn"))["version"]
    assert second != first and storage.list_dirs(layout.model_versions_root(out, "cnn")) == [second]
    assert ModelArtifact(out, "cnn").classes() == ["a", "b", "c"]
    assert len(ModelArtifact(out, "cnn").load(open_set=False).classes) == 3

    ModelArtifact(out, "cnn").save({"status": "failed", "reason": "boom"}, {}, None)  # a failed retrain
    assert storage.read_json(ModelArtifact(out, "cnn").file(layout.RESULT_FILE))["status"] == "ok"  # the model stays
    assert storage.read_json(ModelArtifact(out, "cnn").file(layout.LAST_ATTEMPT_FILE))["reason"] == "boom"
    assert storage.read_json(layout.model_pointer(out, "cnn"))["version"] == second
    ModelArtifact(out, "cnn").check_usable()
