"""Connect to Ray the same way on a laptop and on a cluster.

On a laptop Ray starts inside the process; under `ray job submit` (RAY_ADDRESS set) or with
`--ray-address` the job joins that cluster. Workers get the environment TensorFlow needs (TF_ENV,
as the driver has it), the driver's object-storage variables (STORAGE_ENV_PREFIXES), the console
settings of `faceproc.core.console`, and `setup_worker` before their first task.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping

import ray

from faceproc import TF_ENV
from faceproc.core import console, storage
from faceproc.core.errors import message_or_type
from faceproc.core.ray_address import RayUnreachable, check_address, cluster_address, job_runtime_env

log = logging.getLogger(__name__)

# Ray Train's controller takes one report per worker each time it polls them, every 2 s by default;
# shorter epochs (cnn 1.4 s, a FaceNet head epoch 0.02 s) queued behind it: FaceNet's default training
# took 141 s at 2 s and 53 s at 0.5 s (docs/benchmarks.md, "Training"). Polling cost no measurable CPU.
POLL_SECONDS = os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
# TF_ENV as this process has it (a user's own TF_ENABLE_ONEDNN_OPTS=0 reaches the workers too),
# plus console.worker_env()
WORKER_ENV = {**{key: os.environ[key] for key in TF_ENV}, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": POLL_SECONDS}
# Object-storage endpoints and credentials, passed on as the driver has them when init_ray runs: a
# worker on another node reads and writes OUT's URIs with its own environment, which may lack them
# (AWS_ENDPOINT_URL missing sends an S3-compatible bucket's reads to AWS itself).
STORAGE_ENV_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_APPLICATION_CREDENTIALS")
SETUP_HOOK = "faceproc.core.ray_env.setup_worker"


def init_ray(address: str | None = None) -> None:
    """Join `address` (or $RAY_ADDRESS, which `ray job submit` sets) if given, else start Ray locally.

    A Ray that another process started on this machine is not joined by accident: pass
    `--ray-address auto` to use a `ray start` head.
    """
    if ray.is_initialized():
        return
    job_env = job_runtime_env()
    runtime_env = {"env_vars": _env_not_set_by_job(job_env)}
    if "worker_process_setup_hook" not in job_env:  # Ray takes one hook per job
        runtime_env["worker_process_setup_hook"] = SETUP_HOOK
    address = cluster_address(address)
    check_address(address)
    # a join's refused attempts, as reasons; a local start spawns processes that must keep the real stderr
    refused = console.gcs_refusals() if address != "local" else contextlib.nullcontext([])
    try:
        with refused as refusals:
            ray.init(address=address, runtime_env=runtime_env, logging_level=console.ray_log_level())
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:  # no cluster for "auto", a token-auth
        # cluster without RAY_AUTH_MODE=token here (ConnectionError), or without the token itself
        hint = "" if address == "auto" else (" (a cluster with token auth needs RAY_AUTH_MODE=token and its token: "
                                             "docs/cluster.md)")
        reason = f"the cluster refused this client: {refusals[-1]}" if refusals else message_or_type(exc)
        raise RayUnreachable(f"could not join the Ray cluster at {address}: {reason}{hint}") from None
    if address == "local":  # on a cluster an autoscaler would see the never-scheduled actor's demand
        console.spend_actor_restart_warning()
    else:
        log.info("joined the Ray cluster at %s: %d nodes, %.0f CPUs, %.0f GPUs",
                 ray.get_runtime_context().gcs_address, alive_nodes(), cluster_cpus(), cluster_gpus())


def would_start_here(address: str | None) -> bool:
    """Whether init_ray(address) would start a new one-node Ray in this process: none is joined yet
    and no address (nor $RAY_ADDRESS) names a cluster."""
    return not ray.is_initialized() and cluster_address(address) == "local"


def starts_cpu_only_here(address: str | None) -> bool:
    """`would_start_here` on a machine where TensorFlow sees no GPU: the cluster would be this process's
    own cores, so work small enough for the driver needs no Ray at all (its start costs 5-7 s on two
    cores). A GPU that TensorFlow sees goes to Ray's GPU workers, so Ray starts."""
    if not would_start_here(address):
        return False
    from faceproc.models.keras_env import tf  # the caller is about to use TensorFlow anyway

    return not tf.config.list_physical_devices("GPU")


def setup_worker() -> None:
    """Ray's worker_process_setup_hook: runs in every worker process before its first task.

    RAY_ADDRESS names the worker's own cluster: Ray's state API, which Ray Train's placement-group
    cleaner calls from a worker, otherwise looks for "the" local Ray and fails with a traceback when
    another Ray runs on the same machine. Then the console settings (faceproc.core.console).
    """
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    console.quiet_worker()


def _env_not_set_by_job(job_env: dict) -> dict[str, str]:
    """WORKER_ENV, the driver's object-storage variables and console.worker_env() minus keys that
    `job_env` (a `ray job submit` runtime_env) already sets: Ray refuses the same key twice."""
    job_vars = job_env.get("env_vars", {})
    storage_env = {key: value for key, value in os.environ.items() if key.startswith(STORAGE_ENV_PREFIXES)}
    env = {**WORKER_ENV, **storage_env, **console.worker_env()}
    return {key: value for key, value in env.items() if key not in job_vars}


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 1.0))


def alive_nodes() -> int:
    """Alive nodes of the cluster, whatever they have to give."""
    return sum(1 for node in ray.nodes() if node["Alive"])


def cpu_nodes() -> int:
    """Alive nodes that have CPUs to give (a head started with 0 CPUs does not count)."""
    return max(1, sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0))


def largest_node_cpus() -> float:
    """CPUs of the biggest alive node: more than this cannot be reserved by one worker."""
    return max((float(node["Resources"].get("CPU", 0.0)) for node in ray.nodes() if node["Alive"]), default=1.0)


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0))


class PathNotShared(RuntimeError):
    """A local path the job needs is missing on some node of a multi-node cluster."""


def require_on_every_node(paths: Mapping[str, str]) -> None:
    """On a cluster of more than one node, check with one tiny task per node that every local path
    in `paths` (setting name -> absolute path) exists there too; URIs are every node's by nature.

    Without it a node that lacks the folder fails file by file (each photo a read_error) or, worse,
    writes its shards to its own disk where the driver never sees them.
    """
    local = {name: path for name, path in paths.items() if path and storage.is_local(path)}
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if not local or len(nodes) < 2:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    checks = {
        node["NodeManagerAddress"] + f" (node {node['NodeID'][:8]})": _missing_paths.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(local)
        for node in nodes
    }
    for node, ref in checks.items():
        missing = ray.get(ref)
        if missing:
            name = missing[0]
            raise PathNotShared(
                f"{name} {local[name]} does not exist on Ray node {node}: every node of a multi-node cluster "
                f"must see the same files; put it on shared storage mounted at the same path on every node, "
                f"or use a URI (s3://, gs://)")


@ray.remote(num_cpus=0)
def _missing_paths(paths: dict[str, str]) -> list[str]:
    return [name for name, path in paths.items() if not os.path.exists(storage.resolve(path)[1])]
