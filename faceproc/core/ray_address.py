"""Which Ray cluster a command joins, whether anything answers there, and whether this driver is a
`ray job submit` job: all without importing Ray.

The CLI checks these before it locks or creates OUT: a wrong address would otherwise make Ray retry
its GCS connection for minutes, or end in a traceback, and a relative output in a job would be
written into a temporary copy that Ray deletes.
"""

from __future__ import annotations

import json
import os
import socket

from faceproc.core.errors import message_or_type

CONNECT_SECONDS = 5.0  # a cluster's GCS answers a TCP connect at once; a wrong host or port never does


class RayUnreachable(ConnectionError):
    """The Ray cluster named cannot be joined: said in one line."""


def cluster_address(address: str | None) -> str:
    """What faceproc joins: `address`, else $RAY_ADDRESS, else "local" (a Ray started in this process)."""
    address = address or os.environ.get("RAY_ADDRESS")
    return address if address and address != "local" else "local"


def check_address(address: str | None) -> None:
    """Raise :class:`RayUnreachable` when the cluster `address` names cannot be what ray.init joins:
    an HTTP (dashboard, Jobs API) address, or a host:port where nothing listens. "local", "auto" and
    ray:// client addresses are left to Ray."""
    address = cluster_address(address)
    if address in ("local", "auto") or address.startswith("ray://"):
        return
    if address.startswith(("http://", "https://")):
        raise RayUnreachable(
            f"Ray address {address} is an HTTP address (a dashboard or Jobs API): join a cluster at its GCS "
            f"address, host:6379 (what `ray start --head` prints), or submit with `ray job submit --address {address}`")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnreachable(f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379) or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise RayUnreachable(
            f"no Ray cluster answers at {address} ({message_or_type(exc)}): start one there with "
            "`ray start --head`, or check the address (`ray status` on the head prints it)") from None


def job_runtime_env() -> dict:
    """The runtime_env of a `ray job submit` that started this driver, else {}."""
    job_config = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    return json.loads(job_config).get("runtime_env", {}) if job_config else {}


def job_working_copy() -> str | None:
    """The folder a `ray job submit --working-dir` driver runs in: Ray's temporary copy of that
    directory, which only this node has and which goes when the job ends. None outside such a job."""
    return os.getcwd() if job_runtime_env().get("working_dir") else None
