"""The commit protocol that preprocessing and identify share: stage, then publish in an order readers survive.

A run's actors (or its driver, for up to `driver_max_photos` photos) write face rows and rejects under
`_staging/<run_id>/`. Publishing moves each staged shard to a run-named file, writes the rejects, and
writes the manifest last: the manifest is the commit. Until it is replaced, readers see the previous
run, because a shard or reject row counts only while the manifest names its run; what a run that died
left behind is removed by the next run (`remove_leftovers`). On object storage each step is one PUT (a "move" there
is a copy to a new name), so the same order holds.
"""

from __future__ import annotations

import collections
import dataclasses
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from faceproc.core import layout, storage
from faceproc.core.manifest import Plan, check_accounting, load_manifest, merge_manifest, processed_rows
from faceproc.core.rejects import prune_rejects, read_staged_rejects, write_rejects
from faceproc.core.schema import MANIFEST_SCHEMA
from faceproc.core.shards import numpy_batch, orphan_files
from faceproc.core.text import plural

if TYPE_CHECKING:
    from faceproc.config import PreprocessConfig


def new_run_id() -> str:
    """Sortable by start time, unique across concurrent drivers."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass(kw_only=True)
class StageSummary:
    """The counts every staged run reports: what the listing and the plan found, and the rejects."""
    run_id: str
    discovered: int = 0
    skipped_hidden: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    processed: int = 0  # photos read this run
    detected_in: str = ""  # where they were read: the driver (no actor, maybe no Ray) or an actor pool
    rejects: int = 0  # this run
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    live_rejects: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def count_plan(self, discovered: int, skipped_hidden: int, plan: Plan) -> None:
        self.discovered, self.skipped_hidden = discovered, skipped_hidden
        self.new, self.changed, self.unchanged, self.deleted = plan.new, plan.changed, plan.unchanged, plan.deleted
        self.processed = plan.to_process.num_rows

    def count_rejects(self, staged: Staged) -> None:
        self.rejects = staged.rejects.num_rows
        self.rejects_by_reason = dict(collections.Counter(staged.rejects["reason"].to_pylist()))

    def count_live_rejects(self, manifest: pa.Table) -> None:
        self.live_rejects = pc.sum(pc.equal(manifest["status"], "rejected")).as_py() or 0

    def plan_lines(self) -> list[tuple[str, object]]:
        """The summary's first lines, the same in every stage's console output."""
        changes = f"{self.new} / {self.changed} / {self.unchanged} / {self.deleted}"
        return [("skipped (hidden/system)", self.skipped_hidden), ("new / changed / unchanged / deleted", changes)]

    def detection_lines(self) -> list[tuple[str, object]]:
        """Where this run's photos were read and detected, under "processed this run"."""
        return [("  detected in", self.detected_in)] if self.detected_in else []

    def reject_lines(self) -> list[tuple[str, object]]:
        return [("rejects this run", self.rejects),
                *[(f"  {reason}", n) for reason, n in sorted(self.rejects_by_reason.items())]]


@dataclass
class Staged:
    """What a run's actors (or driver) staged, read back in the driver for the commit."""
    shards: list[tuple[str, str]]  # (staged file, folder it is published in)
    rows: pa.Table  # the columns asked of `read_staged`, one row per staged face row
    rejects: pa.Table
    faces_by_path: collections.Counter[str]
    content: dict[str, str]  # photo path -> SHA-256, as the worker that read the photo computed it


def read_staged(staging: str, folders: list[tuple[str, str]], schema: pa.Schema, path_column: str, sha_column: str,
                columns: tuple[str, ...] = ()) -> Staged:
    """The staged shards of each (staged folder, published folder) pair, with `columns` of their rows
    (typed by the stage's row `schema`, also when nothing was staged)."""
    wanted = list(dict.fromkeys([path_column, sha_column, *columns]))
    shards, tables = [], []
    for staged_folder, published_folder in folders:
        for staged in storage.list_files(staged_folder, ".parquet"):
            tables.append(storage.read_table(staged, columns=wanted))
            shards.append((staged, published_folder))
    rows = pa.concat_tables(tables) if tables else pa.schema([schema.field(name) for name in wanted]).empty_table()
    paths = rows[path_column].to_pylist()
    return Staged(shards=shards, rows=rows, rejects=read_staged_rejects(storage.join(staging, "rejects")),
                  faces_by_path=collections.Counter(paths),
                  content=dict(zip(paths, rows[sha_column].to_pylist())))


def publish(root: str, listing: pa.Table, plan: Plan, previous: pa.Table, run_id: str, staged: Staged) -> pa.Table:
    """Check that every planned photo gave faces or a reject, move the shards into place, write the
    rejects and then the manifest (the commit); returns the new manifest."""
    rejected_paths = staged.rejects["path"].to_pylist()
    check_accounting(plan, set(staged.faces_by_path), rejected_paths)
    for index, (staged_file, folder) in enumerate(staged.shards):
        storage.move(staged_file, storage.join(folder, layout.shard_name(run_id, index)))
    reasons = dict(zip(rejected_paths, staged.rejects["reason"].to_pylist()))
    rejected_content = {path: sha or "" for path, sha in zip(rejected_paths, staged.rejects["sha256"].to_pylist())}
    content = {**staged.content, **rejected_content}
    manifest = merge_manifest(previous, listing, processed_rows(plan, run_id, content, reasons, staged.faces_by_path))
    write_rejects(root, manifest, staged.rejects)  # rows the manifest does not name yet are not live
    storage.write_table_atomic(layout.manifest(root), manifest)
    return load_manifest(root)


def run_staged(root: str, run_id: str, listing: pa.Table, plan: Plan, previous: pa.Table,
               stage: Callable[[str], Staged], on_staged: Callable[[Staged], Any] = lambda staged: None) -> pa.Table:
    """Stage the plan's work with `stage(staging_folder)`, let `on_staged` record what it needs before the
    commit, publish, and return the live manifest. A plan without work only records relisted entries."""
    if plan.has_work:
        staging_root = layout.staging_root(root)
        try:
            staged = stage(storage.join(staging_root, run_id))
            on_staged(staged)
            return publish(root, listing, plan, previous, run_id, staged)
        finally:
            storage.delete_dir(staging_root)
    if plan.relisted:  # content decided these are unchanged: record their listing entries
        relisted = merge_manifest(previous, listing, MANIFEST_SCHEMA.empty_table())
        storage.write_table_atomic(layout.manifest(root), relisted)
        return load_manifest(root)
    return previous


def remove_leftovers(root: str, manifest: pa.Table, shard_folders: list[str]) -> None:
    """Staging, dead reject rows and the shard files of runs the manifest does not name: what runs
    that died left behind. Called under the output lock, so no other run can be writing them."""
    storage.delete_dir(layout.staging_root(root))
    prune_rejects(root, manifest)
    for folder in shard_folders:
        for orphan in orphan_files(folder, manifest):
            storage.delete_file(orphan)


def stage_photos(files: pa.Table, udf: type, udf_args: tuple, prep: PreprocessConfig, faces_dir: str,
                 ray_address: str | None, shared_paths: Mapping[str, str],
                 partition_cols: list[str] | None = None) -> str:
    """Run `udf` (a callable class built as `udf(prep, *udf_args)`: photo rows in, face rows out) over
    the photos in `files`, writing its rows as Parquet under `faces_dir`, in the driver or on an actor
    pool as `runs_in_driver` decides. Returns where the photos went, for the run's summary."""
    step = prep.actor_batch_size  # one block per actor call, so the pool shares the work from the start
    blocks = [files.slice(start, step) for start in range(0, files.num_rows, step)]
    if runs_in_driver(files.num_rows, prep, ray_address, shared_paths):
        return _stage_in_driver(blocks, udf, udf_args, prep, faces_dir, partition_cols)
    return _stage_with_actor_pool(blocks, udf, udf_args, prep, faces_dir, partition_cols)


def runs_in_driver(photos: int, prep: PreprocessConfig, ray_address: str | None,
                   shared_paths: Mapping[str, str]) -> bool:
    """Whether a stage's work on `photos` photos is done in the driver: at most `prep.driver_photo_limit`
    on a one-node cluster without detector GPUs (with no Ray joined and none named by `ray_address` or
    $RAY_ADDRESS, Ray is not started for them). Otherwise the cluster at `ray_address` is joined here and
    every node must be seen to share `shared_paths` (name -> path) before an actor pool may run."""
    from faceproc.core import ray_env

    in_driver = photos <= prep.driver_photo_limit and not prep.detector_num_gpus
    if in_driver and not ray_env.would_start_here(ray_address):  # a cluster to join: is it one node?
        ray_env.init_ray(ray_address)
        in_driver = ray_env.alive_nodes() == 1
    if not in_driver:
        ray_env.init_ray(ray_address)
        ray_env.require_on_every_node(shared_paths)
    return in_driver


def _stage_with_actor_pool(blocks: list[pa.Table], udf: type, udf_args: tuple, prep: PreprocessConfig,
                           faces_dir: str, partition_cols: list[str] | None) -> str:
    """The pool has no more actors than batches: an actor with nothing to do would still load its
    models, on the cores the busy one needs."""
    import ray.data as data

    fs, path = storage.resolve(faces_dir)
    actors = min(prep.detector_actors, len(blocks))
    (
        data.from_arrow(blocks)
        .map_batches(udf, fn_constructor_args=(prep, *udf_args), batch_size=prep.actor_batch_size,
                     compute=data.ActorPoolStrategy(size=actors),
                     num_cpus=prep.detector_num_cpus, num_gpus=prep.detector_num_gpus)
        .write_parquet(path, filesystem=fs, partition_cols=partition_cols, max_rows_per_file=prep.rows_per_shard)
    )
    return f"a Ray Data pool of {plural(actors, 'actor')}"


def _stage_in_driver(blocks: list[pa.Table], udf: type, udf_args: tuple, prep: PreprocessConfig, faces_dir: str,
                     partition_cols: list[str] | None) -> str:
    """`udf` in the driver over the pool's batches (detection batches photos by size, so the batches
    shape the boxes), `prep.driver_thread_count` batches at a time on one `udf`, written as the pool
    writes. The pool would first start Ray, then a process per actor that imports TensorFlow and builds
    MTCNN on its own: 15-20 s on two cores, which a `run`'s driver does once for training anyway. The
    driver's TensorFlow keeps its thread pools (`detector_threads` is for actors sharing a node)."""
    storage.makedirs(faces_dir)  # the run is staging from here on, as with the pool
    pipeline = udf(dataclasses.replace(prep, detector_threads=0), *udf_args)
    threads = max(1, min(prep.driver_thread_count, len(blocks)))
    first, rest = blocks[:1], blocks[1:]  # the first alone: its lazy imports and graph traces happen once
    tables = [pipeline(numpy_batch(block)) for block in first]
    with ThreadPoolExecutor(threads, thread_name_prefix="faceproc-detect") as pool:
        tables += pool.map(lambda block: pipeline(numpy_batch(block)), rest)
    write_staged_rows(pa.concat_tables(tables), faces_dir, prep.rows_per_shard, partition_cols)
    return f"the driver ({plural(threads, 'thread')})"


def write_staged_rows(rows: pa.Table, faces_dir: str, rows_per_shard: int,
                      partition_cols: list[str] | None = None) -> None:
    """Rows a driver made, written under `faces_dir` as an actor pool writes them (Hive partitions,
    the partition columns dropped from the files); nothing when there are none."""
    import pyarrow.dataset as ds

    if not rows.num_rows:
        return
    fs, path = storage.resolve(faces_dir)
    partitioning = (ds.partitioning(pa.schema([rows.schema.field(name) for name in partition_cols]), flavor="hive")
                    if partition_cols else None)
    ds.write_dataset(rows, path, filesystem=fs, format="parquet", partitioning=partitioning,
                     basename_template=f"{uuid.uuid4().hex}-{{i}}.parquet", max_rows_per_file=rows_per_shard,
                     max_rows_per_group=rows_per_shard, existing_data_behavior="overwrite_or_ignore")
