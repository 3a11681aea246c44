"""The cluster path end to end (slow): a real two-node Ray cluster on loopback with token auth (a
`ray start` head and a second `ray start` node, one CPU each), the main job submitted through Ray's
Jobs API (`JobSubmissionClient`) exactly as docs/cluster.md does it, and `faceproc run --ray-address`
from another working directory with relative paths.

The cluster is this module's own: a dedicated `--temp-dir`, its own ports, its own auth token file
(`RAY_AUTH_TOKEN_PATH`), so it never touches `~/.ray/auth_token` or another Ray on the machine.
`ray stop` cannot target one instance (it stops every Ray of the user), so the head runs as
`ray start --block` in its own session: SIGTERM makes it stop the processes it started, and whatever
is left that belongs to this head (by process tree, by the temp dir on its command line or as its
working directory) is killed afterwards.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
SMALL_BATCH = 4  # photos per detection-actor call in the pipeline job: its 12 photos make three batches
RUNTIME_ENV = {
    "working_dir": str(REPO),
    # Anchored patterns: a bare "models" would also drop the package faceproc/models/.
    "excludes": ["/.venv", "/data", "/models", "/.git"],
    "env_vars": {"TF_USE_LEGACY_KERAS": "1"},
}


@dataclass
class Head:
    address: str  # the dashboard / Jobs API, http://127.0.0.1:PORT
    gcs_address: str  # what `--ray-address` takes, 127.0.0.1:PORT
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


def _stop_cluster(procs: list[subprocess.Popen], temp_dir: Path) -> None:
    """Stop exactly this cluster: SIGTERM to each `ray start --block` (it kills what it started; the
    second node first), then SIGKILL for anything of it still alive. Never `ray stop`: that stops
    every Ray on the machine."""
    ours = set().union(*(_head_processes(temp_dir, proc.pid) for proc in procs))
    for proc in reversed(procs):
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
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the session each `ray start` led; only its processes
        except (ProcessLookupError, PermissionError):
            pass
    time.sleep(1)
    left = _head_processes(temp_dir, None)
    if left:
        raise RuntimeError(f"processes of the test cluster still alive after SIGKILL: {sorted(left)}")


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


def _state(head: Head, kind: str) -> list[dict]:
    """Rows of Ray's state API over the dashboard's HTTP endpoint: nodes, actors, ..."""
    reply = requests.get(f"{head.address}/api/v0/{kind}", params={"limit": 10000, "detail": "true"},
                         headers=head.auth_headers, timeout=60)
    reply.raise_for_status()
    return reply.json()["data"]["result"]["result"]


def _wait_for_nodes(head: Head, proc: subprocess.Popen, log: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start` of a node exited with {proc.returncode}:\n{log.read_text()[-5000:]}")
        if sum(node["state"] == "ALIVE" for node in _state(head, "nodes")) >= count:
            return
        time.sleep(2)
    raise RuntimeError(f"{count} nodes not alive after {timeout:.0f} s:\n{log.read_text()[-5000:]}")


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
     runtime_env_agent, metrics, *second_ports) = _free_ports(15)
    ports = ["--node-manager-port", "--object-manager-port", "--runtime-env-agent-port", "--metrics-export-port",
             "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port"]
    head_command = [
        str(BIN / "ray"), "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={gcs}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        "--num-cpus=1", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats",
        f"--ray-client-server-port={client_server}", f"--dashboard-agent-listen-port={agent_listen}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}", f"--runtime-env-agent-port={runtime_env_agent}",
        f"--metrics-export-port={metrics}",
    ]
    # A second node on the same machine: its own raylet and ports, the head's session directory.
    second_command = [str(BIN / "ray"), "start", "--block", f"--address=127.0.0.1:{gcs}",
                      "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats",
                      *(f"{flag}={port}" for flag, port in zip(ports, second_ports))]
    log = temp_dir / "ray-start.log"
    procs = []
    with open(log, "w") as out:
        procs.append(subprocess.Popen(head_command, env=head_env, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True, cwd=temp_dir))
    try:
        result = Head(address=f"http://127.0.0.1:{dashboard}", gcs_address=f"127.0.0.1:{gcs}", temp_dir=temp_dir,
                      token_file=token_file, token=token, client_env={**base_env, **auth_env})
        _wait_for_jobs_api(result, procs[0], log)
        with open(temp_dir / "ray-start-second.log", "w") as out:
            procs.append(subprocess.Popen(second_command, env=head_env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True, cwd=temp_dir))
        _wait_for_nodes(result, procs[1], temp_dir / "ray-start-second.log", count=2)
        yield result
    finally:
        try:
            _stop_cluster(procs, temp_dir)
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


def test_a_job_refuses_paths_in_its_working_dir_copy_before_any_work(head, client, tmp_path):
    """A relative output would be written into the job's temporary copy of the repository, and the
    default dataset fetched there: both are refused in one line, before a download or a lock."""
    status, logs, message = _run_job(client, "python jobs/pipeline.py --output out-rel --models cnn", timeout=300)
    assert status == "FAILED", message
    assert re.search(r"faceproc: error: output /\S+/out-rel lies in this job's copy of its working_dir", logs), message
    status, logs, message = _run_job(client, f"python jobs/pipeline.py --output {tmp_path / 'out'}", timeout=300)
    assert status == "FAILED", message
    assert "fetching the dataset would put it in this job's copy of its working_dir" in logs, message
    assert "fetch:" not in logs and not (tmp_path / "out").exists(), message  # nothing downloaded or created


@pytest.fixture(scope="module")
def pipeline_job(head, client, small_input, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("jobs") / "out"
    # batches of 4 photos: three batches, so both detection actors have work (the pool has no more
    # actors than batches)
    entrypoint = (f"python jobs/pipeline.py --input {small_input} --output {out} --models cnn,facenet "
                  f"--epochs 2 --set models_dir={MODELS_DIR} --set preprocess.actor_batch_size={SMALL_BATCH}")
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
    assert accuracy["facenet"]["status"] == "ok" and accuracy["cnn"]["status"] == "ok", accuracy


def test_pipeline_job_used_both_nodes(head, pipeline_job):
    """Detection actors and cnn's two training workers ran on both nodes (Ray's state API)."""
    _, logs = pipeline_job
    nodes = {node["node_id"] for node in _state(head, "nodes") if node["state"] == "ALIVE"}
    assert len(nodes) == 2
    actors = _state(head, "actors")
    for kind in ("FacePipeline", "RayTrainWorker"):
        ran_on = {actor["node_id"] for actor in actors if kind in actor["class_name"]}
        assert ran_on == nodes, (kind, ran_on, nodes, logs)
    result = json.loads((pipeline_job[0] / "models" / "cnn" / "result.json").read_text())
    assert result["workers"] == 2, result


def test_pipeline_job_rows_equal_a_single_node_run(pipeline_job, small_input, tmp_path, ray_session):
    """The rows a two-node cluster published are the rows one local Ray makes from the same photos."""
    from faceproc.config import Config, PreprocessConfig
    from faceproc.preprocess.run import run_preprocess

    local = tmp_path / "local"
    run_preprocess(Config(input=str(small_input), output=str(local), models_dir=str(MODELS_DIR),
                          preprocess=PreprocessConfig(actor_batch_size=SMALL_BATCH)))
    columns = ["source_path", "augment_index", "label", "aligned", "box"]

    def rows(out: Path) -> list[tuple]:
        table = pq.read_table(out / "shards", columns=columns)
        return sorted((Path(r["source_path"]).name, r["augment_index"], r["label"], r["aligned"],
                       tuple(round(v) for v in r["box"])) for r in table.to_pylist())

    assert rows(pipeline_job[0]) == rows(local)


def test_run_from_another_directory_with_relative_paths(head, small_input, tmp_path):
    """`faceproc run --ray-address` against the two-node cluster from a directory no node works in,
    every path relative: the driver resolves them once, so no photo is a read_error."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    relative = {name: os.path.relpath(path, cwd) for name, path in
                (("input", small_input), ("output", tmp_path / "out"), ("models", MODELS_DIR))}
    done = subprocess.run(
        [str(BIN / "faceproc"), "run", "--ray-address", head.gcs_address, "--input", relative["input"],
         "--output", relative["output"], "--models", "facenet", "--set", f"models_dir={relative['models']}"],
        cwd=cwd, env=head.client_env, capture_output=True, text=True, timeout=JOB_TIMEOUT)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, printed
    manifest = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert len(manifest) == 12 and all(row["status"] == "ok" for row in manifest), printed
    accuracy = {row["model"]: row for row in json.loads((tmp_path / "out" / "reports" / "accuracy.json").read_text())}
    assert accuracy["facenet"]["status"] == "ok", printed


def test_workers_on_every_node_get_the_drivers_object_storage_settings(head):
    """AWS_ENDPOINT_URL where faceproc runs reaches the workers of nodes started without it: else
    their reads of an S3-compatible bucket go to AWS itself."""
    code = ("import json, logging, os, ray\nfrom faceproc.core.ray_env import init_ray\n"
            "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as On\n"
            "logging.basicConfig(level=logging.INFO)\n"
            f"init_ray({head.gcs_address!r})\n"
            "@ray.remote(num_cpus=1)\ndef seen():\n"
            "    return ray.get_runtime_context().get_node_id(), os.environ.get('AWS_ENDPOINT_URL')\n"
            "nodes = [node['NodeID'] for node in ray.nodes() if node['Alive']]\n"  # one task pinned to each
            "print(json.dumps(ray.get([seen.options(scheduling_strategy=On(n, soft=False)).remote() for n in nodes])))")
    assert "AWS_ENDPOINT_URL" not in head.client_env  # the nodes were started without it
    done = subprocess.run([sys.executable, "-c", code], env={**head.client_env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    port = head.gcs_address.rsplit(":", 1)[1]
    assert re.search(rf"joined the Ray cluster at \S+:{port}: 2 nodes, 2 CPUs", done.stderr), done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert len({node for node, _ in seen}) == 2
    assert {endpoint for _, endpoint in seen} == {"http://127.0.0.1:9"}


@pytest.mark.parametrize("auth", [{}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/nonexistent/auth_token"}],
                         ids=["no token auth here", "token file missing"])
def test_joining_a_token_cluster_without_its_token_is_one_line(head, small_input, tmp_path, auth):
    env = {key: value for key, value in head.client_env.items() if not key.startswith("RAY_AUTH")}
    done = subprocess.run(
        [str(BIN / "faceproc"), "preprocess", "--ray-address", head.gcs_address, "--input", str(small_input),
         "--output", str(tmp_path / "out")],
        cwd=tmp_path, env={**env, **auth, "HOME": str(tmp_path)},  # no ~/.ray/auth_token either
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    # one line: Ray's C++ client's refused attempts (one a second, about 20) are its reason, not noise
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"faceproc: error: could not join the Ray cluster at {head.gcs_address}: "), \
        done.stderr
    assert "token auth needs RAY_AUTH_MODE=token" in done.stderr
    if not auth:
        assert "the cluster refused this client: Unauthenticated" in done.stderr, done.stderr


def test_a_path_missing_on_a_node_is_one_clear_error(head, tmp_path):
    """The per-node check names the setting, the path and the node, and suggests shared storage."""
    code = ("import ray; from faceproc.core.ray_env import require_on_every_node; "
            f"ray.init(address='{head.gcs_address}'); "
            f"require_on_every_node({{'input': '{tmp_path}/not-on-any-node', 'output': '{tmp_path}'}})")
    done = subprocess.run([sys.executable, "-c", code], env=head.client_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert re.search(rf"PathNotShared: input {tmp_path}/not-on-any-node does not exist on Ray node [0-9.]+ "
                     r"\(node [0-9a-f]{8}\).*shared storage", done.stderr), done.stderr
