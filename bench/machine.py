"""Machine state for the benchmarks in bench/: load, busy cores, CPU seconds of a process tree.

Other jobs on a shared machine skew benchmark timings, so every benchmark prints the load average,
the machine's busy cores and the cores other processes took next to its numbers. The scripts are
run as `python bench/<script>.py`, which puts this folder on sys.path: they `import machine`.
Linux only (iowait, steal and VmHWM are Linux notions).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CPUS = os.cpu_count() or 1

TreeCpu = dict[tuple[int, float], float]
"""User+system CPU seconds last seen per process, keyed by (pid, create time)."""


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, printed as /proc/loadavg does ("0.52 0.58 0.59")."""
    return " ".join(f"{value:.2f}" for value in psutil.getloadavg())


def uptime() -> str:
    """`uptime`'s line, for the results: the same view of the machine a reader would check."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


@dataclass(frozen=True)
class Snapshot:
    """Load average, whole-machine CPU counters and a monotonic clock, read together."""

    at: float
    busy: float  # CPU seconds since boot spent neither idle nor in iowait, all cores
    total: float
    load: str


def snapshot() -> Snapshot:
    """Now: two snapshots give wall time and busy cores over a benchmark phase (`busy_cores`)."""
    t = psutil.cpu_times()
    total = t.user + t.nice + t.system + t.idle + t.iowait + t.irq + t.softirq + t.steal  # guest is inside user
    return Snapshot(at=time.monotonic(), busy=total - t.idle - t.iowait, total=total, load=loadavg())


def busy_cores(before: Snapshot, after: Snapshot) -> float:
    """Cores the whole machine kept busy between two snapshots (0 to CPUS)."""
    return (after.busy - before.busy) / max(1e-9, after.total - before.total) * CPUS


def other_cores(machine_busy: float, own_cpu_seconds: float, seconds: float) -> float:
    """Cores that processes outside the benchmarked tree took: machine busy cores minus our own."""
    return max(0.0, machine_busy - own_cpu_seconds / seconds)


def peak_rss_kb(pid: int) -> int | None:
    """The kernel's RSS high-water mark (VmHWM) of one process; None once it has exited.

    Read from /proc/<pid>/status because psutil does not expose VmHWM.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def record_tree_cpu(root: int, seen: TreeCpu) -> None:
    """Store the user+system CPU seconds of `root` and every descendant still alive into `seen`.

    Keyed by (pid, create time) and never removed, so that sum(seen.values()) still counts the
    processes of the tree that have exited since they were last seen (up to their last moments);
    a reused pid gets a new key. Processes that end while being read are skipped.
    """
    try:
        parent = psutil.Process(root)
        procs = [parent, *parent.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return
    for proc in procs:
        try:
            times = proc.cpu_times()
            seen[(proc.pid, proc.create_time())] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


@dataclass
class TreeRun:
    """How a watched command went: exit code, wall seconds, its peak RSS, its tree's CPU seconds."""

    code: int
    wall: float
    peak_rss_kb: int  # the process alone, not its children
    waited_cpu: float  # wait4's rusage: the process and every descendant reaped inside the tree
    polled: TreeCpu = field(default_factory=dict)

    @property
    def polled_cpu(self) -> float:
        """CPU seconds of every process of the tree as last polled, exited ones included."""
        return sum(self.polled.values())

    @property
    def tree_cpu(self) -> float:
        """The better of the two counts: neither can overcount, each misses what the other sees
        (wait4 misses orphaned processes, polling the last moments of each process)."""
        return max(self.waited_cpu, self.polled_cpu)


def run_watched(cmd: list[str], log_path: Path, *, env: dict, cwd: Path,
                poll_seconds: float = 0.2, tree_every: int = 3) -> TreeRun:
    """Run `cmd` (output to `log_path`) and watch it until it exits.

    Every `poll_seconds` the process's VmHWM is read (only the last poll interval before exit can
    escape the peak); every `tree_every` polls the CPU seconds of its process tree (for faceproc:
    driver, raylet, GCS, Ray workers) are recorded.
    """
    seen: TreeCpu = {}
    peak = 0
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        polls = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, peak_rss_kb(proc.pid) or 0)
            if polls % tree_every == 0:
                record_tree_cpu(proc.pid, seen)
            polls += 1
            time.sleep(poll_seconds)
        wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
    return TreeRun(code=proc.returncode, wall=wall, peak_rss_kb=peak,
                   waited_cpu=usage.ru_utime + usage.ru_stime, polled=seen)
