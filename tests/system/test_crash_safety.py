"""Crash safety of `faceproc run`: real runs SIGKILLed during detection, the shard write and training.

Every run is the real CLI in a subprocess of its own session (start_new_session=True), so the local
Ray it starts belongs to that session too. A kill is SIGKILL to the process group, then every process
still in the session is killed by id: Ray workers put themselves in process groups of their own, and a
worker that was being started when its raylet died would otherwise linger.

After a kill OUT must be readable and still show the last published state; the next run must finish
the work so that every input file is accounted for exactly once (`_assert_consistent`).

Kills found by polling OUT land wherever the run happens to be; the last test also hits each step of
the publish exactly, with the CLI run in a driver that SIGKILLs itself right after that step.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from faceproc.core.layout import run_of_shard as run_of
from faceproc.core.lock import output_lock
from faceproc.core.manifest import live_runs, load_manifest
from faceproc.core.rejects import read_live_rejects
from faceproc.core.shards import live_shard_files, read_live_faces
from tests.system.console import assert_quiet, assert_quiet_run

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

PEOPLE = ("ben_afflek", "madonna", "mindy_kaling")
TRAIN_PHOTOS, VAL_PHOTOS = 5, 2
BROKEN = "train/madonna/broken.jpg"  # one reject, so that reject accounting is exercised too
TRAIN_ARGS = ["--models", "cnn", "--epochs", "3"]  # trained in the driver: a split this small, one node
# Stored augmented copies: several rows per photo, so a kill can land between a photo's rows.
PREPROCESS_ARGS = ["--set", "preprocess.augment_copies=2"]
RUN_TIMEOUT = 1800.0  # seconds; a run takes minutes on 2 loaded cores
POLL = 0.005  # seconds between looks at OUT while waiting for a kill point
FACE_COLUMNS = ["source_path", "source_sha256", "augment_index", "run_id"]

# For kills at an exact step of the publish: the CLI in a driver whose storage.move /
# storage.write_bytes_atomic SIGKILLs the process group right after the step named in KILL_AT_ENV
# ("move:<n>" = after the n-th move, "write:<name>" = after the atomic write of a file so named).
KILL_AT_ENV = "FACEPROC_TEST_KILL_AT"
KILL_AT_BOOTSTRAP = """
import os, signal, sys
from faceproc.core import storage
kind, _, arg = os.environ["FACEPROC_TEST_KILL_AT"].partition(":")
moves = []
def die():
    os.killpg(os.getpgrp(), signal.SIGKILL)
def move(src, dst, _move=storage.move):
    _move(src, dst)
    moves.append(dst)
    if kind == "move" and len(moves) == int(arg):
        die()
def write_bytes_atomic(uri, data, _write=storage.write_bytes_atomic):
    _write(uri, data)
    if kind == "write" and uri.rsplit("/", 1)[-1] == arg:
        die()
storage.move, storage.write_bytes_atomic = move, write_bytes_atomic
from faceproc.cli import main
sys.exit(main(sys.argv[1:]))
"""


# --- input ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory, dataset_dir) -> Path:
    """3 people x (5 train + 2 val) real photos, one broken file, and under extra/ one more train
    photo per person (the new files of a second run)."""
    root = tmp_path_factory.mktemp("crash-photos")
    for person in PEOPLE:
        train = sorted((dataset_dir / "train" / person).iterdir())
        val = sorted((dataset_dir / "val" / person).iterdir())
        for split, files in (("train", train[:TRAIN_PHOTOS]), ("val", val[:VAL_PHOTOS])):
            (root / "in" / split / person).mkdir(parents=True)
            for src in files:
                shutil.copy(src, root / "in" / split / person / src.name)
        (root / "extra" / person).mkdir(parents=True)
        shutil.copy(train[TRAIN_PHOTOS], root / "extra" / person / train[TRAIN_PHOTOS].name)
    (root / "in" / BROKEN).write_bytes(b"not a photo\n" * 50)
    return root


def _workdir(tmp_path: Path, photos: Path) -> Path:
    shutil.copytree(photos / "in", tmp_path / "in")
    return tmp_path


def _add_extra_photos(work: Path, photos: Path) -> list[Path]:
    added = []
    for person_dir in sorted((photos / "extra").iterdir()):
        for src in person_dir.iterdir():
            dst = work / "in" / "train" / person_dir.name / src.name
            shutil.copy(src, dst)
            added.append(dst)
    return added


# --- processes --------------------------------------------------------------------------------------


@dataclass
class Job:
    label: str
    proc: subprocess.Popen
    log: Path
    started: float

    @property
    def session(self) -> int:
        return self.proc.pid  # start_new_session: the child leads a session and a process group

    def tail(self, chars: int = 5000) -> str:
        """The end of the log without Ray Data's progress bars."""
        text = self.log.read_text(errors="replace").replace("\r", "\n")
        lines = [line for line in text.splitlines() if line.strip() and "row/s" not in line
                 and "\x1b[A" not in line]
        return "\n".join(lines)[-chars:]


def _session_processes(session: int) -> list[int]:
    """Live (non-zombie) processes of `session`, from /proc/<pid>/stat."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp session ...
        if int(fields[3]) == session and fields[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def _kill_session(session: int, timeout: float = 60.0) -> list[int]:
    """SIGKILL the process group, then any process left in the session, by id; returns the latter."""
    try:
        os.killpg(session, signal.SIGKILL)
    except ProcessLookupError:
        pass
    stragglers: set[int] = set()
    deadline = time.monotonic() + timeout
    while pids := _session_processes(session):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of session {session} survive SIGKILL: {pids}")
        for pid in pids:
            stragglers.add(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return sorted(stragglers)


@pytest.fixture
def runner(tmp_path) -> Iterator[Callable[..., Job]]:
    """start(work, label, *extra_args, command="run", kill_at=None) -> Job; every session started
    is gone after the test."""
    jobs: list[Job] = []

    def start(work: Path, label: str, *extra: str, command: str = "run", kill_at: str | None = None) -> Job:
        log = tmp_path / f"{label}.log"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own
        env["PYTHONUNBUFFERED"] = "1"
        args = [command, "--input", str(work / "in"), "--output", str(work / "out"), *PREPROCESS_ARGS,
                *(TRAIN_ARGS if command == "run" else []), *extra]
        if kill_at is None:
            argv = [sys.executable, "-m", "faceproc.cli", *args]
        else:
            env[KILL_AT_ENV] = kill_at
            argv = [sys.executable, "-c", KILL_AT_BOOTSTRAP, *args]
        with open(log, "wb") as stream:
            proc = subprocess.Popen(argv, stdout=stream, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=work, env=env, start_new_session=True)
        job = Job(label, proc, log, time.monotonic())
        jobs.append(job)
        return job

    yield start
    for job in jobs:
        if job.proc.poll() is None or _session_processes(job.session):
            _kill_session(job.session)
        job.proc.wait()


def _finish(job: Job) -> int:
    """Wait for the run to end by itself; then nothing of its session may remain."""
    try:
        code = job.proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_session(job.session)
        pytest.fail(f"{job.label}: no result after {RUN_TIMEOUT:.0f} s\n{job.tail()}")
    seconds = time.monotonic() - job.started
    left = _kill_session(job.session)  # Ray shuts down at exit; anything left over goes now
    print(f"{job.label}: exit {code} after {seconds:.0f} s"
          + (f", {len(left)} leftover process(es) killed by id" if left else ""))
    return code


def _complete(start: Callable[..., Job], work: Path, label: str, command: str = "run") -> Job:
    """Run to the end; the run must succeed and its console show faceproc's lines only."""
    job = start(work, label, command=command)
    code = _finish(job)
    assert code == 0, f"{label} failed with exit code {code}:\n{job.tail()}"
    printed = job.log.read_text(errors="replace")
    if command == "run":
        assert_quiet_run(printed, ["cnn"])
    else:
        assert_quiet(printed)
    return job


def _killed_at(start: Callable[..., Job], work: Path, label: str, kill_at: str) -> str:
    """A `faceproc preprocess` SIGKILLed right after the publish step `kill_at`; returns its run id."""
    job = start(work, label, command="preprocess", kill_at=kill_at)
    code = _finish(job)
    assert code == -signal.SIGKILL, f"{label}: never reached {kill_at} (exit {code}):\n{job.tail()}"
    runs = [p.name for p in _subdirs(work / "out" / "_staging")]
    assert len(runs) == 1, runs
    return runs[0]


def _kill_when(job: Job, point: Callable[[], str | None], what: str) -> str:
    """Poll OUT until `point()` names something, then SIGKILL the whole run; returns that name."""
    while (hit := point()) is None:
        if job.proc.poll() is not None:
            pytest.fail(f"{job.label}: the run ended (exit {job.proc.returncode}) before {what}\n{job.tail()}")
        if time.monotonic() - job.started > RUN_TIMEOUT:
            _kill_session(job.session)
            pytest.fail(f"{job.label}: {what} did not happen in {RUN_TIMEOUT:.0f} s\n{job.tail()}")
        time.sleep(POLL)
    seconds = time.monotonic() - job.started
    stragglers = _kill_session(job.session)
    job.proc.wait(timeout=60)
    assert not _session_processes(job.session)
    print(f"{job.label}: SIGKILL {what} ({hit}) after {seconds:.1f} s; "
          f"{len(stragglers)} process(es) outside the process group killed by id")
    return hit


# --- what is on disk --------------------------------------------------------------------------------


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(path) if e.is_dir())
    except FileNotFoundError:
        return []


def _files_under(path: Path) -> list[Path]:
    return sorted(Path(dirpath, name) for dirpath, _, names in os.walk(path) for name in names)


def _shard_files(out: Path) -> list[Path]:
    return sorted(p for p in _files_under(out / "shards") if p.suffix == ".parquet")


def _input_files(root: Path) -> dict[str, Path]:
    return {str(p): p for p in _files_under(root) if not p.name.startswith(".")}


def _live_rows(out: Path, split: str) -> list[tuple]:
    """(source_path, source_sha256, augment_index, run_id) of every live row, sorted."""
    dataset = read_live_faces(str(out), split, FACE_COLUMNS)
    if dataset is None:
        return []
    frame = dataset.to_pandas()
    return sorted(zip(*(frame[c].tolist() for c in FACE_COLUMNS)))


def _model_loads(out: Path, classes: int) -> None:
    from faceproc.inference.artifact import ModelArtifact

    model = ModelArtifact(str(out), "cnn").load()
    assert len(model.classes) == classes


def _assert_readable(out: Path) -> None:
    """What a reader does: manifest, live faces of each split, rejects; and the lock is free."""
    load_manifest(str(out))
    for split in ("train", "val"):
        _live_rows(out, split)
    if (out / "rejects.parquet").exists():
        pq.read_table(out / "rejects.parquet")
    with output_lock(str(out)):  # a killed run must not keep OUT locked
        pass


def _assert_consistent(out: Path, input_root: Path, full_run: bool = True, clean: bool = True):
    """Every input file in the manifest once; its face rows live exactly once; rejects match;
    with `clean`, no staging, orphan shards or temporary files left. Returns the manifest."""
    manifest = load_manifest(str(out))
    rows = manifest.to_pylist()
    files = _input_files(input_root)
    paths = [r["path"] for r in rows]
    assert sorted(paths) == sorted(files), "the manifest must list every input file, once"
    for r in rows:
        assert r["sha256"] == hashlib.sha256(files[r["path"]].read_bytes()).hexdigest(), r["path"]
    by_path = {r["path"]: r for r in rows}
    assert by_path[str(input_root / BROKEN)]["status"] == "rejected"

    for split, indexes in (("train", [0, 1, 2]), ("val", [0])):
        live = _live_rows(out, split)
        keys = [(path, index) for path, _, index, _ in live]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        assert not duplicates, f"{split}: duplicate live rows {duplicates[:5]}"
        found: dict[str, list[int]] = {}
        for path, sha, index, run_id in live:
            entry = by_path.get(path)
            assert entry is not None and entry["status"] == "ok" and entry["split"] == split, path
            assert (sha, run_id) == (entry["sha256"], entry["run_id"]), \
                f"{path}: live row from {run_id}, the manifest names {entry['run_id']}"
            found.setdefault(path, []).append(index)
        ok = sorted(r["path"] for r in rows if r["status"] == "ok" and r["split"] == split)
        assert sorted(found) == ok, f"{split}: ok files without live rows: {sorted(set(ok) - set(found))}"
        for path in ok:
            assert sorted(found[path]) == indexes, f"{path}: augment indexes {sorted(found[path])}"
            assert by_path[path]["face_rows"] == len(indexes), path

    rejects = read_live_rejects(str(out), manifest).to_pylist()
    rejected = sorted(r["path"] for r in rows if r["status"] == "rejected")
    assert sorted(r["path"] for r in rejects) == rejected, "live rejects != the manifest's rejected files"
    for r in rejects:
        assert (r["sha256"], r["run_id"]) == (by_path[r["path"]]["sha256"], by_path[r["path"]]["run_id"])

    if clean:
        assert not (out / "_staging").exists(), f"staging left: {_files_under(out / '_staging')[:5]}"
        dead = pq.read_table(out / "rejects.parquet").num_rows - len(rejects)
        assert not dead, f"rejects.parquet keeps {dead} row(s) of runs the manifest does not name"
        runs = live_runs(manifest)
        orphans = [str(p.relative_to(out)) for p in _shard_files(out) if run_of(str(p)) not in runs]
        assert not orphans, f"shards of runs the manifest does not name: {orphans}"
        litter = [str(p.relative_to(out)) for p in _files_under(out)
                  if p.name.startswith(".tmp-") and "_ray_train" not in p.parts]
        assert not litter, f"temporary files left: {litter}"

    if full_run:
        result = json.loads((out / "models" / "cnn" / "result.json").read_text())
        assert result["status"] == "ok", result
        accuracy = json.loads((out / "reports" / "accuracy.json").read_text())
        assert [(r["model"], r["status"]) for r in accuracy] == [("cnn", "ok")], accuracy
    return manifest


def _latest_run(out: Path) -> dict:
    records = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")
               if not p.name.endswith(".preprocess.json")]
    return max(records, key=lambda r: r["run_id"])


# --- the tests --------------------------------------------------------------------------------------


def _killed_during_detection(work: Path, runner: Callable[..., Job]) -> str:
    """A first run killed while it detects faces (in the driver: 22 photos are under
    `preprocess.driver_max_photos`): nothing may be published. Returns its id."""
    out = work / "out"
    job = runner(work, "run1-killed-during-detection")
    first_seen: list[float] = []

    def detecting() -> str | None:
        """A run is staging (detection under way); give the detector a moment, but kill at the
        latest when the first face file is staged."""
        runs = _subdirs(out / "_staging")
        if not runs:
            return None
        if not first_seen:
            first_seen.append(time.monotonic())
        if _files_under(runs[0] / "faces") or time.monotonic() - first_seen[0] > 2.0:
            return runs[0].name
        return None

    killed = _kill_when(job, detecting, "during detection")
    staged = _files_under(out / "_staging" / killed / "faces")
    print(f"face files staged at the kill: {len(staged)}")

    _assert_readable(out)
    assert not (out / "manifest.parquet").exists(), "a killed first run must not publish a manifest"
    assert load_manifest(str(out)).num_rows == 0
    assert not [p for p in _shard_files(out) if run_of(str(p)) == killed]
    assert live_shard_files(str(out), "train") == [] and _live_rows(out, "train") == []
    return killed


def _killed_during_training(work: Path, runner: Callable[..., Job], dead: str) -> None:
    """The next run, after the run `dead` was killed during detection, killed during training: it
    processed every file once, cleaned up after `dead` and published; no model or report yet."""
    out = work / "out"
    job = runner(work, "run2-killed-during-training")

    def training() -> str | None:
        """The first epoch line is printed: training is under way (epoch 1 of 3 done), in the
        driver (a split this small) as on a Ray Train worker."""
        first_epoch = re.search(r"cnn epoch 1/\d+", job.log.read_text(errors="replace"))
        return first_epoch.group(0) if first_epoch else None

    _kill_when(job, training, "during training")
    _assert_readable(out)
    manifest = _assert_consistent(out, work / "in", full_run=False)  # preprocessing was published
    assert dead not in live_runs(manifest)
    assert not [p for p in _files_under(out) if dead in p.name and "runs" not in p.parts]
    (record,) = [json.loads(p.read_text()) for p in (out / "runs").glob("*.preprocess.json")]  # run 2's only
    assert record["new"] == record["processed"] == len(_input_files(work / "in"))
    assert not (out / "models" / "cnn" / "model.keras").exists()
    assert not (out / "reports" / "accuracy.json").exists()


def _completed_after_the_kill_during_training(work: Path, runner: Callable[..., Job]) -> None:
    """A plain rerun trains and evaluates, and does not preprocess again: nothing changed."""
    out = work / "out"
    manifest = load_manifest(str(out))
    _complete(runner, work, "run3")
    assert _assert_consistent(out, work / "in").equals(manifest), "nothing changed: no preprocessing"
    record = _latest_run(out)
    assert record["counts"]["new"] == 0 and record["counts"]["unchanged"] == len(manifest)
    assert record["training"][0]["status"] == "ok" and not record["training"][0]["up_to_date"]
    _model_loads(out, len(PEOPLE))


def _killed_during_shard_write_keeps_the_previous_run(work: Path, photos: Path, runner: Callable[..., Job]) -> None:
    """New photos; a run killed while it writes their shards; the published state, model and report
    stay as they were (or, if the kill came after the commit, the new state holds); the next run
    completes the work without processing the earlier files again."""
    out = work / "out"
    manifest1 = _assert_consistent(out, work / "in")
    (run1,) = live_runs(manifest1)
    live1 = {split: _live_rows(out, split) for split in ("train", "val")}
    rejects1 = pq.read_table(out / "rejects.parquet")
    model1 = hashlib.sha256((out / "models" / "cnn" / "model.keras").read_bytes()).hexdigest()
    accuracy1 = (out / "reports" / "accuracy.json").read_text()

    added = _add_extra_photos(work, photos)

    def writing() -> str | None:
        """A face file is staged, or a shard of an unpublished run is in place."""
        for staging in _subdirs(out / "_staging"):
            if _files_under(staging / "faces"):
                return staging.name
        for shard in _shard_files(out):
            if run_of(str(shard)) != run1:
                return run_of(str(shard))
        return None

    job = runner(work, "run4-killed-during-shard-write")
    killed = _kill_when(job, writing, "during the shard write")
    _assert_readable(out)
    manifest = load_manifest(str(out))
    published = sorted(p.name for p in _shard_files(out) if run_of(str(p)) == killed)
    if killed in live_runs(manifest):
        # the kill landed after the manifest was replaced: the run is committed; its state must hold
        print(f"the kill came after the commit of {killed}")
        _assert_consistent(out, work / "in", full_run=False)
    else:
        print(f"killed before the commit; staged: {len(_files_under(out / '_staging'))} file(s), "
              f"moved into shards/: {published}")
        assert manifest.equals(manifest1), "the published manifest changed although the run died"
        assert {split: _live_rows(out, split) for split in ("train", "val")} == live1
        assert pq.read_table(out / "rejects.parquet").equals(rejects1)
        assert [run_of(f) for f in live_shard_files(str(out), "train")] == [run1] * len(
            live_shard_files(str(out), "train"))
    # the previous run's model and report are untouched either way
    assert hashlib.sha256((out / "models" / "cnn" / "model.keras").read_bytes()).hexdigest() == model1
    assert (out / "reports" / "accuracy.json").read_text() == accuracy1
    _model_loads(out, len(PEOPLE))

    _complete(runner, work, "run5")
    manifest5 = _assert_consistent(out, work / "in")
    assert not [p for p in _files_under(out) if p.name.startswith(killed)], "the killed run's files remain"
    rows5 = {r["path"]: r for r in manifest5.to_pylist()}
    for r in manifest1.to_pylist():  # the earlier files were not processed again
        assert (rows5[r["path"]]["sha256"], rows5[r["path"]]["run_id"]) == (r["sha256"], run1), r["path"]
    new_runs = {rows5[str(p)]["run_id"] for p in added}
    assert len(new_runs) == 1 and run1 not in new_runs
    live5 = _live_rows(out, "train")
    assert [row for row in live5 if row[3] == run1] == live1["train"]
    assert len(live5) == len(live1["train"]) + 3 * len(added)
    assert _live_rows(out, "val") == live1["val"]
    record = _latest_run(out)
    if killed in new_runs:  # committed by the killed run: nothing left to preprocess, only to train
        assert (record["counts"]["new"], record["counts"]["unchanged"]) == (0, len(manifest5))
    else:
        assert (record["counts"]["new"], record["counts"]["unchanged"]) == (len(added), len(manifest1))
    assert record["training"][0]["status"] == "ok" and not record["training"][0]["up_to_date"]


def test_killed_during_detection_then_training_then_the_shard_write(tmp_path, photos, runner):
    """One OUT through five `faceproc run`s, three of them SIGKILLed, each kill at a later stage than
    the one before, so that every run after a kill also cleans up after it (fewer full runs than one
    OUT per kill; the steps' docstrings say what each checks)."""
    work = _workdir(tmp_path, photos)
    dead = _killed_during_detection(work, runner)
    _killed_during_training(work, runner, dead)
    _completed_after_the_kill_during_training(work, runner)
    _killed_during_shard_write_keeps_the_previous_run(work, photos, runner)


def test_killed_right_after_each_publish_step(tmp_path, photos, runner):
    """The publish steps hit exactly: `faceproc preprocess` SIGKILLed (whole process group) right
    after the first shard move, after rejects.parquet, after the manifest; then a plain rerun.
    Every problem is collected, so one failure names all of them."""
    work = _workdir(tmp_path, photos)
    out = work / "out"
    _complete(runner, work, "run1", command="preprocess")
    manifest1 = _assert_consistent(out, work / "in", full_run=False)
    (run1,) = live_runs(manifest1)
    live1 = {split: _live_rows(out, split) for split in ("train", "val")}
    rejects1 = pq.read_table(out / "rejects.parquet")
    assert rejects1.equals(read_live_rejects(str(out), manifest1))
    added = _add_extra_photos(work, photos)
    broken2 = work / "in" / "val" / "madonna" / "broken2.jpg"  # a new reject for the killed runs
    broken2.write_bytes(b"still not a photo\n" * 50)
    problems: list[str] = []

    def previous_state_kept(step: str) -> None:
        _assert_readable(out)
        if not load_manifest(str(out)).equals(manifest1):
            problems.append(f"{step}: the manifest changed")
        if {split: _live_rows(out, split) for split in ("train", "val")} != live1:
            problems.append(f"{step}: the live face rows changed")
        rejects = read_live_rejects(str(out), load_manifest(str(out)))
        if not rejects.equals(rejects1):
            extra = sorted(set(rejects.column("path").to_pylist()) - set(rejects1.column("path").to_pylist()))
            problems.append(f"{step}: the live reject rows changed although the manifest did not; "
                            f"they now also list {[Path(p).name for p in extra]} (run {killed})")

    killed = _killed_at(runner, work, "run2-killed-after-first-move", "move:1")
    assert [p for p in _shard_files(out) if run_of(str(p)) == killed], "the moved shard should be there"
    previous_state_kept("killed after the first shard move")

    killed = _killed_at(runner, work, "run3-killed-after-rejects", "write:rejects.parquet")
    previous_state_kept("killed after writing rejects.parquet")

    committed = _killed_at(runner, work, "run4-killed-after-manifest", "write:manifest.parquet")
    _assert_readable(out)
    manifest4 = _assert_consistent(out, work / "in", full_run=False, clean=False)  # committed
    assert committed in live_runs(manifest4)
    print(f"left by the kill after the commit: staging {[p.name for p in _subdirs(out / '_staging')]}, "
          f"orphan shards {[p.name for p in _shard_files(out) if run_of(str(p)) not in live_runs(manifest4)]}")

    _complete(runner, work, "run5", command="preprocess")  # nothing left to process
    try:
        manifest5 = _assert_consistent(out, work / "in", full_run=False)
    except AssertionError as exc:
        problems.append(f"after a rerun with nothing to process: {str(exc).splitlines()[0]}")
        manifest5 = load_manifest(str(out))
    assert manifest5.equals(manifest4)
    rows = {r["path"]: r for r in manifest5.to_pylist()}
    assert all(rows[r["path"]]["run_id"] == run1 for r in manifest1.to_pylist())
    assert {rows[str(p)]["run_id"] for p in [*added, broken2]} == {committed}
    print("\n".join(["problems:", *problems]) if problems else "no problems")
    assert not problems, "\n".join(problems)
