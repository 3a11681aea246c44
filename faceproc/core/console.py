"""What a faceproc run prints: its own lines by default, every library's internals with `-v`.

A default run prints stage headers, progress (Ray Data's progress bars on a terminal, one line per
training epoch from the chief worker), one summary per stage, results, faceproc's own warnings and
real errors. This module quiets the rest (TensorFlow, absl, Keras and Ray internals) in the driver
(`configure`, called by the CLI) and in every Ray worker (`worker_env` and `quiet_worker`, which
`ray_env.init_ray` hands to Ray's runtime_env). With `-v` every library keeps its own defaults.

Levels and Ray's own settings do most of it. What no level reaches is dropped by what it is:
native lines written before TensorFlow reads TF_CPP_MIN_LOG_LEVEL, Ray's once-per-process
actor-restart error (spent at ray.init), worker lines without a level Ray forwards to the driver
(RAY_DEDUP_LOGS_SKIP_REGEX; they stay in the workers' log files) and one Ray Data thread race.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType, TracebackType
from typing import IO

VERBOSE_ENV = "FACEPROC_VERBOSE"  # "1" under `faceproc -v`; the CLI sets it, init_ray passes it to workers
LOG_FORMAT = "%(asctime)s %(name)s: %(message)s"
LIBRARIES = r"(ray|tensorflow|tf_keras|keras|absl)(\.|$)"  # whose UserWarnings are internals

# Worker lines Ray forwards to the driver that no level reaches from here: Ray Train's controller
# logs at the level of RunConfig(logging_config=...), INFO by default; Ray's C++ core worker logs
# an actor-restart error once per process (see spend_actor_restart_warning).
FORWARDED_NOISE_PATTERNS = (
    r"Requesting resources: ",
    r"Attempting to start training worker group",
    r"Started training worker group",
    r"world_rank=\d+, local_rank=\d+",
    r"Setting up process group",
    r"has constructor arguments in the object store and max_restarts > 0",
    # the GCS, when it kills an actor whose worker has already exited (an actor pool shutting down):
    # the actor id is NIL_ID or the id itself, with "KillActor RPC failed ... Socket closed"
    r"gcs_actor_scheduler\.cc:\d+: Failed to kill actor",
)
FORWARDED_NOISE = "|".join(FORWARDED_NOISE_PATTERNS)
ACTOR_RESTART_WARNING = re.compile(r"core_worker\.cc:\d+: .*max_restarts > 0")
GCS_REFUSAL = re.compile(r"gcs_client\.cc:\d+: Failed to get cluster ID from GCS server: (Unauthenticated: .+)$")
ABSL_LINE = re.compile(r"^([IWEF])\d{4} ")  # absl's prefix: severity, then MMDD
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"


def verbose() -> bool:
    """Whether this run shows internals: `faceproc -v`, or FACEPROC_VERBOSE=1 for library use."""
    return os.environ.get(VERBOSE_ENV) == "1"


def configure(verbose: bool) -> None:
    """Set up the driver's console; the CLI calls this before anything imports Ray or TensorFlow."""
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format=LOG_FORMAT, datefmt="%H:%M:%S")
        if "tensorflow" not in sys.modules:  # TensorFlow's default, not faceproc's quiet 3
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, datefmt="%H:%M:%S")
    logging.getLogger("faceproc").setLevel(logging.INFO)  # stage summaries; other libraries' INFO is internals
    os.environ.setdefault("RAY_DEDUP_LOGS_SKIP_REGEX", FORWARDED_NOISE)  # read when Ray is imported
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")  # read when Ray Data is imported
    _quiet_this_process()


def worker_env() -> dict[str, str]:
    """Environment for every Ray worker, on top of ray_env.WORKER_ENV."""
    if verbose():
        return {VERBOSE_ENV: "1", "TF_CPP_MIN_LOG_LEVEL": "0"}
    return {VERBOSE_ENV: "0",
            # before any import: Ray and TensorFlow warn while their modules load
            "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::PendingDeprecationWarning,ignore::FutureWarning",
            # Ray Data's "Starting execution", "Execution plan", "Progress bars disabled" in its actors
            "RAY_DATA_LOG_LEVEL": "ERROR"}


def ray_log_level() -> int:
    """`ray.init(logging_level=...)`: the banner, dashboard URL and token hint are Ray's INFO and WARNING."""
    return logging.INFO if verbose() else logging.ERROR


def quiet_worker() -> None:
    """Quiet one Ray worker process, before it runs any task (ray_env.setup_worker calls it)."""
    if not verbose():
        _quiet_this_process()


def quiet_train_worker() -> None:
    """In a Ray Train worker, after Ray Train configured its loggers: `loop.epoch_line` is the progress.

    Ray Data's progress bars are off and the root logger stays at WARNING in both modes (Ray Train
    sends each `print` to the root logger too, which would double every epoch line).
    """
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger().setLevel(logging.WARNING)
    if not verbose():  # Ray Train's dictConfig reset what quiet_worker set
        for name in ("ray.train", "ray.data", "tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.ERROR)


def spend_actor_restart_warning() -> None:
    """Ray's core worker (C++) logs one error per process the first time it creates an actor that has
    constructor arguments in the object store and may restart (ray-project/ray#53727); every Ray Data
    actor pool does. No setting turns it off but RAY_BACKEND_LOG_LEVEL=fatal, which on a laptop would
    also empty the raylet's and GCS's logs. So spend it here, right after ray.init, on an actor that
    needs a resource no node has (it never starts), with native stderr captured."""
    if verbose():
        return
    import ray

    @ray.remote(num_cpus=0, max_restarts=1, resources={"faceproc-never-scheduled": 1})
    class _SpendWarning:
        def __init__(self, _argument: object) -> None:
            pass

    argument = ray.put(None)
    with native_stderr(lambda line: not ACTOR_RESTART_WARNING.search(line)):
        handle = _SpendWarning.remote(argument)
    del handle  # out of scope: Ray removes the pending actor


@contextlib.contextmanager
def gcs_refusals() -> Iterator[list[str]]:
    """Around `ray.init` joining a cluster: Ray's C++ GCS client logs each attempt a token-auth
    cluster refuses ("Unauthenticated ... InvalidAuthToken") once a second for about 20 s before
    Python raises a ConnectionError that names no reason. Those lines are dropped and their reasons
    collected into the yielded list (filled when the block exits), so the caller's one-line error can
    say why; any other line, another failure's included, is written back. Only for a join: a local
    Ray's processes, started inside the block, would inherit the capture as their stderr. With -v
    the lines stay."""
    reasons: list[str] = []
    if verbose():
        yield reasons
        return

    def keep(line: str) -> bool:
        refusal = GCS_REFUSAL.search(line)
        if refusal:
            reasons.append(refusal.group(1))
        return refusal is None

    with native_stderr(keep):
        yield reasons


@contextlib.contextmanager
def native_stderr(keep: Callable[[str], bool]) -> Iterator[None]:
    """Send file descriptor 2 (where C++ libraries write) to a temporary file for the block, then
    write back to stderr the lines `keep` accepts. A file, not a pipe: nothing reads while it fills."""
    with tempfile.TemporaryFile(mode="w+b") as captured:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            _replay(captured, keep)


def _replay(captured: IO[bytes], keep: Callable[[str], bool]) -> None:
    captured.seek(0)
    text = captured.read().decode("utf-8", "replace")
    kept = [line for line in text.splitlines(keepends=True) if keep(line.rstrip("\n"))]
    if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


def _quiet_this_process() -> None:
    """Warnings filters, library log levels, a quiet `import tensorflow` and thread excepthook."""
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", category=UserWarning, module=LIBRARIES)
    # tensorflow: deprecation notices and Keras' "No training configuration found" / "compiled
    # metrics have yet to be built"; ray, ray.data, ray.train: startup, execution plans, hints.
    for name in ("tensorflow", "absl", "ray", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())
    if not isinstance(threading.excepthook, _SkipRayDataInterrupts):
        threading.excepthook = _SkipRayDataInterrupts(threading.excepthook)


class _SkipRayDataInterrupts:
    """threading.excepthook without one Ray Data race: when its work-stealing pool (file listing)
    shuts down, a helper thread still putting to the pool's queue raises InterruptedError, and the
    thread's traceback is printed although the task succeeded. Any other exception goes on."""

    def __init__(self, previous: Callable[[threading.ExceptHookArgs], object]) -> None:
        self.previous = previous

    def __call__(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is InterruptedError and _raised_in(args.exc_traceback, "ray.data._internal."):
            return
        self.previous(args)


def _raised_in(tb: TracebackType | None, package: str) -> bool:
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith(package)


def _below_tf_min_log_level(line: str) -> bool:
    """An absl line TensorFlow would have dropped, had it read TF_CPP_MIN_LOG_LEVEL before writing it."""
    if line == ABSL_PREAMBLE:
        return True
    match = ABSL_LINE.match(line)
    minimum = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") or 0)
    return bool(match) and "IWEF".index(match.group(1)) < minimum


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Runs the first `import tensorflow` with native stderr captured.

    libtensorflow_framework's static initializers log `oneDNN custom operations are on` and
    `cudart_stub ... Could not find cuda drivers` (plus absl's InitializeLog preamble) while the
    library loads, before TensorFlow applies TF_CPP_MIN_LOG_LEVEL; those lines are dropped, any
    other line (a real error) is written back. Removes itself after that one import.
    """

    def find_spec(self, name: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _CapturingLoader(spec.loader)
        return spec


class _CapturingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # TensorFlow sees its own loader
        with native_stderr(lambda line: not _below_tf_min_log_level(line)):
            self.loader.exec_module(module)
