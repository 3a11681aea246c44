"""One run at a time per output: an advisory lock file under OUT.

On a local disk (or a shared POSIX filesystem) `flock` makes a second run wait or exit with a clear
message. Object stores have no atomic lock; there, runs must be serialised by the scheduler (one
cron entry, one RayJob), and the lock is a no-op, as the README says.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from typing import Iterator

from faceproc.core import layout, storage


class LockedError(RuntimeError):
    """Another faceproc run holds the output."""


@contextlib.contextmanager
def output_lock(out: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold OUT's lock for the duration; wait up to `wait_seconds` for another run to finish."""
    if not storage.is_local(out):
        yield
        return
    _, path = storage.resolve(out)
    os.makedirs(path, exist_ok=True)
    lock_path = os.path.join(path, layout.LOCK_FILE)
    with open(lock_path, "a+") as handle:
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
                                      f"wait for it or pass --wait SECONDS") from None
                time.sleep(1.0)
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
