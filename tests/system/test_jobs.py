"""The cluster path end to end (slow): a real `ray start` head on loopback with token auth, and the
main job submitted through Ray's Jobs API (`JobSubmissionClient`) exactly as docs/cluster.md does it.

The head is this module's own: a dedicated `--temp-dir`, its own ports, its own auth token file
(`RAY_AUTH_TOKEN_PATH`), so it never touches `~/.ray/auth_token` or another Ray on the machine.
`ray stop` cannot target one instance (it stops every Ray of the user), so the head runs as
`ray start --block` in its own session: SIGTERM makes it stop the processes it started, and whatever
is left that belongs to this head (by process tree, by the temp dir on its command line or as its
working directory) is killed afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq
import pytest
import requests

from tests.conftest import DATASET, REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc to stop the head"),
]

MODELS_DIR = REPO / "models"
BIN = Path(sys.executable).parent
PEOPLE = ("ben_afflek", "elton_john")
PER_SPLIT = {"train": 4, "val": 2}
JOB_TIMEOUT = 15 * 60
RUNTIME_ENV = {
    "working_dir": str(REPO),
    # Anchored patterns: a bare "models" would also drop the package faceproc/models/.
    "excludes": ["/.venv", "/data", "/models", "/.git"],
    "env_vars": {"TF_USE_LEGACY_KERAS": "1"},
}


@dataclass
class Head:
    address: str  # the dashboard / Jobs API, http://127.0.0.1:PORT
    temp_dir: Path
    token_file: Path
    token: str
    client_env: dict[str, str]  # environment for a Ray CLI client of this head, as docs/cluster.md sets it

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


# --- processes ---------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _head_processes(temp_dir: Path, root_pid: int | None) -> set[int]:
    """Live processes of this head: `root_pid`'s descendants, and any process whose command line
    names `temp_dir` or whose working directory is inside it (job drivers run in a copy there)."""
    parents: dict[int, int] = {}
    found: set[int] = set()
    marker = str(temp_dir)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.add(pid)
            elif os.readlink(entry / "cwd").startswith(marker):
                found.add(pid)
        except (OSError, IndexError, ValueError):
            continue
    if root_pid is not None:
        frontier = {root_pid}
        while frontier:
            found |= frontier
            frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
    return {pid for pid in found if _alive(pid)}


def _stop_head(proc: subprocess.Popen, temp_dir: Path) -> None:
    """Stop exactly this head: SIGTERM to `ray start --block` (it kills what it started), then SIGKILL
    for anything of this head still alive. Never `ray stop`: that stops every Ray on the machine."""
    ours = _head_processes(temp_dir, proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(pid) for pid in ours):
        time.sleep(0.5)
    for pid in ours | _head_processes(temp_dir, None):
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the session `ray start` led; only our processes are in it
    except (ProcessLookupError, PermissionError):
        pass
    time.sleep(1)
    left = _head_processes(temp_dir, None)
    if left:
        raise RuntimeError(f"processes of the test head still alive after SIGKILL: {sorted(left)}")


def _wait_for_jobs_api(head: Head, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start` exited with {proc.returncode}:\n{log.read_text()[-5000:]}")
        try:
            JobSubmissionClient(head.address, headers=head.auth_headers).list_jobs()
            return
        except Exception as exc:  # not up yet: connection refused, 404 before the job module loads
            error = exc
            time.sleep(2)
    raise RuntimeError(f"Jobs API at {head.address} not ready after {timeout:.0f} s: {error}\n"
                       f"{log.read_text()[-5000:]}")


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    # Short path: Ray's Unix sockets live under it (limit 107 bytes).
    temp_dir = Path(tempfile.mkdtemp(prefix="fpjob-", dir="/tmp"))
    token = secrets.token_hex(32)
    token_file = temp_dir / "auth_token"
    token_file.write_text(token)
    token_file.chmod(0o600)

    base_env = {k: v for k, v in os.environ.items()
                if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    base_env["PATH"] = f"{BIN}{os.pathsep}{base_env.get('PATH', '')}"  # job entrypoints run `python`
    auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    head_env = {**base_env, **auth_env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}

    (gcs, dashboard, client_server, agent_listen, agent_grpc, node_manager, object_manager,
     runtime_env_agent, metrics) = _free_ports(9)
    command = [
        str(BIN / "ray"), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={gcs}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats",
        f"--ray-client-server-port={client_server}", f"--dashboard-agent-listen-port={agent_listen}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}", f"--runtime-env-agent-port={runtime_env_agent}",
        f"--metrics-export-port={metrics}",
    ]
    log = temp_dir / "ray-start.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, env=head_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=temp_dir)
    try:
        result = Head(address=f"http://127.0.0.1:{dashboard}", temp_dir=temp_dir, token_file=token_file,
                      token=token, client_env={**base_env, **auth_env})
        _wait_for_jobs_api(result, proc, log)
        yield result
    finally:
        try:
            _stop_head(proc, temp_dir)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def client(head):
    from ray.job_submission import JobSubmissionClient

    # The token goes in an explicit header: this process may already hold another Ray's auth state
    # (other tests start a local Ray, and Ray caches the auth mode and token per process).
    return JobSubmissionClient(head.address, headers=head.auth_headers)


def _run_job(client, entrypoint: str, timeout: float) -> tuple[str, str, str]:
    """Submit, wait for a terminal state; returns (status, logs, message)."""
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=RUNTIME_ENV)
    started = time.monotonic()
    deadline = started + timeout
    status = client.get_job_status(job_id)
    while not status.is_terminal() and time.monotonic() < deadline:
        time.sleep(5)
        status = client.get_job_status(job_id)
    if not status.is_terminal():
        client.stop_job(job_id)
    info = client.get_job_info(job_id)
    logs = client.get_job_logs(job_id)
    message = (f"job {job_id}: {status.value} after {time.monotonic() - started:.0f} s (limit {timeout:.0f} s): "
               f"{info.message}\n--- job logs ---\n{logs}")
    return str(status.value), logs, message


# --- inputs ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_input(tmp_path_factory) -> Path:
    """2 people x (4 train + 2 val) photos copied from the fetched dataset: 12 files."""
    if not (DATASET / "train").is_dir() or not (MODELS_DIR / "facenet_keras.h5").is_file():
        pytest.fail(f"{DATASET} or {MODELS_DIR}/facenet_keras.h5 missing: run `faceproc fetch-data` first")
    root = tmp_path_factory.mktemp("jobs") / "input"
    for split, count in PER_SPLIT.items():
        for person in PEOPLE:
            photos = sorted(p for p in (DATASET / split / person).iterdir() if not p.name.startswith("."))
            (root / split / person).mkdir(parents=True)
            for photo in photos[:count]:
                shutil.copy2(photo, root / split / person / photo.name)
    return root


# --- tests -------------------------------------------------------------------------------------


def test_head_enforces_token_auth(head):
    """Token auth is on: no token -> 401, wrong token -> 403, and the Ray CLI with the documented
    client environment (RAY_AUTH_MODE=token plus the token file) gets in."""
    assert requests.get(f"{head.address}/api/jobs/", timeout=30).status_code == 401
    wrong = requests.get(f"{head.address}/api/jobs/", timeout=30,
                         headers={"Authorization": f"Bearer {secrets.token_hex(32)}"})
    assert wrong.status_code == 403
    cli = subprocess.run([str(BIN / "ray"), "job", "list", "--address", head.address], env=head.client_env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stdout + cli.stderr


def test_job_imports_faceproc_from_the_uploaded_working_dir(head, client):
    """`python jobs/...` finds faceproc in the uploaded copy of the repository (what a cluster node
    has), not through this machine's editable install."""
    code = "import faceproc, sys; print('FACEPROC_FILE=' + faceproc.__file__)"
    status, logs, message = _run_job(client, f'python -c "{code}"', timeout=300)
    assert status == "SUCCEEDED", message
    line = next(line for line in logs.splitlines() if line.startswith("FACEPROC_FILE="))
    path = line.split("=", 1)[1]
    assert path.startswith(str(head.temp_dir)) and "runtime_resources" in path, message


@pytest.fixture(scope="module")
def pipeline_job(head, client, small_input, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("jobs") / "out"
    entrypoint = (f"python jobs/pipeline.py --input {small_input} --output {out} --models facenet "
                  f"--set models_dir={MODELS_DIR}")
    status, logs, message = _run_job(client, entrypoint, timeout=JOB_TIMEOUT)
    assert status == "SUCCEEDED", message
    return out, logs


def test_pipeline_job_succeeds_with_all_stages(pipeline_job):
    _, logs = pipeline_job
    for number in range(1, 5):
        assert f"[{number}/4]" in logs, logs


def test_pipeline_job_outputs(pipeline_job):
    out, logs = pipeline_job
    manifest = pq.read_table(out / "manifest.parquet")
    assert manifest.num_rows == sum(PER_SPLIT.values()) * len(PEOPLE) == 12, logs
    assert (out / "models" / "facenet" / "model.keras").is_file(), logs
    accuracy = {row["model"]: row for row in json.loads((out / "reports" / "accuracy.json").read_text())}
    assert accuracy["facenet"]["status"] == "ok", accuracy
