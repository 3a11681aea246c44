"""One run at a time per output: an advisory lock file under OUT, or a lease object on object storage.

On a local disk (or a shared POSIX filesystem) `flock` makes a second run wait or exit with a clear
message. Object stores have no lock. There `OUT/.faceproc.lease` holds {owner, holder, heartbeat,
expires}: a run takes the lease when there is none or it has expired, writes it, waits
SETTLE_SECONDS and reads it back; if another run's write came last, that run has it and this one
backs off. While it runs, a thread renews the lease every RENEW_SECONDS; a run that dies stops
renewing, and its lease expires TTL_SECONDS after the last renewal, so the next run waits at most
that long.

The remaining race on object storage, stated plainly: two runs whose read-write-read sequences
interleave so that each reads back its own write (one run slower than SETTLE_SECONDS between its
first read and its write) both proceed. Conditional writes would close it; pyarrow's filesystems do
not offer them. A scheduler that starts one run at a time (one cron entry, one RayJob) never hits it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import IO, Any

from faceproc.core import layout, storage
from faceproc.core.errors import message_or_type

log = logging.getLogger(__name__)

TTL_SECONDS = 120.0
RENEW_SECONDS = 30.0
SETTLE_SECONDS = 2.0
POLL_SECONDS = 1.0


class LockedError(RuntimeError):
    """Another faceproc run holds the output."""


class OutputUnwritable(OSError):
    """OUT cannot be created or written at all (a bucket that does not exist, no permission, a path
    under a file): said in one line."""


def _unwritable(out: str, exc: OSError) -> OutputUnwritable:
    return OutputUnwritable(f"cannot write to {out}: {message_or_type(exc)}")


def _what_next(wait_seconds: float) -> str:
    if wait_seconds > 0:
        return f"it was still in use after --wait {wait_seconds:g} s: wait longer, or for it to end"
    return "wait for it or pass --wait SECONDS"


@contextlib.contextmanager
def output_lock(out: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold OUT's lock (or, on object storage, its lease) for the duration; wait up to `wait_seconds`
    for another run to finish."""
    if not storage.is_local(out):
        with output_lease(out, wait_seconds):
            yield
        return
    with _open_lock_file(out) as handle:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    raise LockedError(f"another faceproc run is using {out} ({holder}); "
                                      f"{_what_next(wait_seconds)}") from None
                time.sleep(POLL_SECONDS)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock_file(out: str) -> IO[str]:
    """OUT's lock file, opened for update; OUT is created first (the first write there)."""
    _, path = storage.resolve(out)
    try:
        os.makedirs(path, exist_ok=True)
        return open(os.path.join(path, layout.LOCK_FILE), "a+")
    except OSError as exc:
        raise _unwritable(out, exc) from exc


def read_lease(out: str) -> dict[str, Any] | None:
    """The lease as written, or None when there is none (or it is unreadable: a torn write)."""
    try:
        lease = storage.read_json(layout.lease(out))
    except (FileNotFoundError, ValueError):
        return None
    except OSError:
        if not storage.exists(layout.lease(out)):
            return None
        raise
    return lease if isinstance(lease, dict) else None


@contextlib.contextmanager
def output_lease(out: str, wait_seconds: float = 0.0, ttl: float = TTL_SECONDS,
                 renew: float = RENEW_SECONDS, settle: float = SETTLE_SECONDS) -> Iterator[None]:
    """Hold OUT's lease for the duration; wait up to `wait_seconds` for another run's to end or expire."""
    owner = uuid.uuid4().hex
    holder = f"pid {os.getpid()} on {socket.gethostname()}"
    deadline = time.monotonic() + wait_seconds
    while not _try_take(out, owner, holder, ttl, settle):
        if time.monotonic() >= deadline:
            current = read_lease(out) or {}
            left = max(0.0, float(current.get("expires", 0)) - time.time())
            raise LockedError(f"another faceproc run is using {out} ({current.get('holder', 'unknown')}; its lease "
                              f"expires in {left:.0f} s unless renewed); {_what_next(wait_seconds)}")
        time.sleep(POLL_SECONDS)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(out, owner, holder, ttl, renew, stop), daemon=True,
                               name="faceproc-lease")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        if (read_lease(out) or {}).get("owner") == owner:
            storage.delete_file(layout.lease(out))


def _try_take(out: str, owner: str, holder: str, ttl: float, settle: float) -> bool:
    try:  # the first read and write of OUT: nothing is there to clean up
        current = read_lease(out)
        if current is not None and float(current.get("expires", 0)) > time.time():
            return False
        _write(out, owner, holder, ttl)
    except OSError as exc:
        raise _unwritable(out, exc) from exc
    time.sleep(settle)  # let a racing writer's lease land, then see whose came last
    return (read_lease(out) or {}).get("owner") == owner


def _renew(out: str, owner: str, holder: str, ttl: float, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        try:
            _write(out, owner, holder, ttl)
        except OSError as exc:  # the store is unreachable for a moment: the next renewal may get through
            log.warning("could not renew the lease on %s (%s); it expires %.0f s after the last renewal",
                        out, exc, ttl)


def _write(out: str, owner: str, holder: str, ttl: float) -> None:
    now = time.time()
    storage.write_bytes_atomic(layout.lease(out), json.dumps(
        {"owner": owner, "holder": holder, "heartbeat": now, "expires": now + ttl}).encode())
