"""`faceproc preprocess`: photos to Parquet face shards with Ray Data, incrementally.

list -> plan against the manifest (size and mtime; no photo is read) -> Arrow blocks of the files
to do -> read, hash and decode, MTCNN, crop, augment and encode (one actor pool) -> staged Parquet
-> publish: shards moved into place, rejects and then the manifest written atomically. Until the
manifest is replaced, readers see the previous run (shard and reject rows count only when the
manifest names their run).
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from faceproc.config import Config
from faceproc.core import layout, storage
from faceproc.core.manifest import (
    Plan,
    check_accounting,
    hash_where_needed,
    load_manifest,
    merge_manifest,
    plan_run,
    processed_rows,
)
from faceproc.core.rejects import prune_rejects, read_staged_rejects, write_rejects
from faceproc.core.schema import MANIFEST_SCHEMA
from faceproc.core.shards import orphan_shard_files
from faceproc.core.text import key_values
from faceproc.preprocess.discover import Discovery, discover
from faceproc.preprocess.operators import PARTITION_COLUMN, FacePipeline
from faceproc.preprocess.settings import describe_change, fingerprint, row_settings

log = logging.getLogger(__name__)



class PreprocessError(RuntimeError):
    """The run finished but its result is not usable (e.g. too many rejects); message says why."""


@dataclass
class PreprocessSummary:
    run_id: str
    discovered: int = 0
    skipped_hidden: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    resettled: int = 0  # unchanged photos processed again because the preprocessing settings changed
    settings_change: str | None = None  # what changed, e.g. "face_margin 0.1 -> 0.4"
    hashed_in_driver: int = 0  # files read in the driver to decide (old manifest rows, verify_hashes)
    processed: int = 0
    face_photos: int = 0
    face_rows: int = 0
    augmented_rows: int = 0
    aligned_faces: int = 0  # original crops warped onto the keypoint template
    unaligned_faces: int = 0  # original crops kept as margin crops (alignment off, or keypoints unusable)
    rejects: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    live_files: int = 0
    live_rejects: int = 0
    leakage: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [
            ("discovered files", self.discovered),
            ("skipped (hidden/system)", self.skipped_hidden),
            ("new / changed / unchanged / deleted",
             f"{self.new} / {self.changed} / {self.unchanged} / {self.deleted}"),
            *([("settings changed, redone", f"{self.resettled} ({self.settings_change})")] if self.resettled else []),
            ("hashed in the driver", self.hashed_in_driver),
            ("processed this run", self.processed),
            ("photos with a face", self.face_photos),
            ("  aligned / margin crop", f"{self.aligned_faces} / {self.unaligned_faces}"),
            ("face rows written", self.face_rows),
            ("  of which augmented", self.augmented_rows),
            ("rejects this run", self.rejects),
            *[(f"  {reason}", n) for reason, n in sorted(self.rejects_by_reason.items())],
            ("live files / live rejects", f"{self.live_files} / {self.live_rejects}"),
            ("train/val leakage (same content)", len(self.leakage)),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        return key_values(lines)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_preprocess(config: Config, run_id: str | None = None) -> PreprocessSummary:
    """Process the files under config.input that the manifest in config.output does not hold yet.

    Ray is imported and started only when there is work: a rerun with nothing new costs the listing."""
    started = time.monotonic()
    summary = PreprocessSummary(run_id=run_id or new_run_id())
    out = config.output
    found = discover(config.input)
    summary.discovered, summary.skipped_hidden = found.files.num_rows, found.skipped

    previous = load_manifest(out)
    _remove_leftovers(out, previous)
    settings = row_settings(config.preprocess)
    listing = hash_where_needed(found.files, previous, config.preprocess.verify_hashes, storage.sha256_or_none)
    plan = plan_run(listing, previous, fingerprint(settings))
    summary.new, summary.changed = plan.new, plan.changed
    summary.unchanged, summary.deleted = plan.unchanged, plan.deleted
    summary.hashed_in_driver = plan.hashed
    summary.processed = plan.to_process.num_rows
    if plan.resettled:
        summary.resettled = plan.resettled
        summary.settings_change = "; ".join(describe_change(_saved_settings(out, old), settings)
                                            for old in sorted(plan.old_settings, key=str))
        log.info("preprocessing settings changed: %s; %d photos to redo", summary.settings_change, plan.resettled)
    if plan.has_work:
        staging_root = layout.staging_root(out)
        try:
            staging = storage.join(staging_root, summary.run_id)
            _process(config, found, plan, summary.run_id, staging)
            _publish(config, listing, plan, previous, summary, staging, settings)
        finally:
            storage.delete_dir(staging_root)
    elif plan.relisted:  # content decided these are unchanged: record their listing entries
        storage.write_table_atomic(layout.manifest(out), merge_manifest(previous, listing, MANIFEST_SCHEMA.empty_table()))
    manifest = load_manifest(out) if plan.has_work or plan.relisted else previous
    _fill_live_counts(summary, manifest)
    summary.seconds = time.monotonic() - started
    storage.write_json_atomic(layout.config(out), config.to_dict())
    if plan.has_work:
        storage.write_json_atomic(layout.run_record(out, summary.run_id, "preprocess"),
                                  summary.to_dict())
    _check_reject_share(summary, config.preprocess.max_reject_share)
    return summary


def _process(config: Config, found: Discovery, plan: Plan, run_id: str, staging: str) -> None:
    """Run the dataset for the files in `plan`, staging faces and rejects under `staging`. Ray starts
    here, when some file is to be read (a run that only deletes needs none)."""
    prep = config.preprocess
    todo = plan.to_process
    label_ids = pc.index_in(todo["label"], value_set=pa.array(found.labels, pa.string()))
    files = pa.table({
        "path": todo["path"],
        "split": pc.fill_null(todo["split"], ""),
        "label": pc.fill_null(todo["label"], ""),
        "label_id": pc.fill_null(label_ids, -1).cast(pa.int32()),
        "layout_error": pc.fill_null(todo["layout_error"], ""),
    })
    step = prep.actor_batch_size  # one block per actor call, so the pool shares the work from the start
    blocks = [files.slice(start, step) for start in range(0, files.num_rows, step)]
    if not blocks:  # only deletions: nothing to read
        return
    import ray.data as data

    from faceproc.core.ray_env import init_ray, require_on_every_node

    init_ray(config.ray_address)
    require_on_every_node({"input": config.input, "output": config.output})
    fs, staging_path = storage.resolve(staging)
    (
        data.from_arrow(blocks)
        .map_batches(FacePipeline, fn_constructor_args=(prep, run_id, storage.join(staging, "rejects")),
                     batch_size=prep.actor_batch_size,
                     compute=data.ActorPoolStrategy(size=prep.detector_actors),
                     num_cpus=prep.detector_num_cpus, num_gpus=prep.detector_num_gpus)
        .write_parquet(f"{staging_path}/faces", filesystem=fs, partition_cols=[PARTITION_COLUMN],
                       max_rows_per_file=prep.rows_per_shard)
    )


def _publish(config: Config, listing: pa.Table, plan: Plan, previous: pa.Table,
             summary: PreprocessSummary, staging: str, settings: dict[str, Any]) -> None:
    """Move staged shards into place, then write rejects and finally the manifest (the commit)."""
    out = config.output
    faces_by_path: collections.Counter[str] = collections.Counter()
    augmented = aligned = 0
    staged_files: list[tuple[str, str]] = []
    content: dict[str, str] = {}  # path -> SHA-256, as the worker that read the file computed it
    for split_dir in _partition_dirs(storage.join(staging, "faces")):
        split = split_dir.rsplit("=", 1)[1]
        for staged in storage.list_files(split_dir, ".parquet"):
            columns = storage.read_table(staged, columns=["source_path", "source_sha256", "augment_index", "aligned"])
            faces_by_path.update(columns.column("source_path").to_pylist())
            content.update(zip(columns.column("source_path").to_pylist(), columns.column("source_sha256").to_pylist()))
            copies = columns.column("augment_index").to_pylist()
            augmented += sum(1 for i in copies if i > 0)
            aligned += sum(1 for i, a in zip(copies, columns.column("aligned").to_pylist()) if i == 0 and a)
            staged_files.append((split, staged))
    new_rejects = read_staged_rejects(storage.join(staging, "rejects"))
    rejected_paths = new_rejects.column("path").to_pylist()
    check_accounting(plan, set(faces_by_path), rejected_paths)
    for index, (split, staged) in enumerate(staged_files):
        storage.move(staged, storage.join(layout.shard_dir(out, split), layout.shard_name(summary.run_id, index)))

    summary.face_photos = len(faces_by_path)
    summary.face_rows = sum(faces_by_path.values())
    summary.augmented_rows = augmented
    summary.aligned_faces, summary.unaligned_faces = aligned, len(faces_by_path) - aligned
    summary.rejects = len(rejected_paths)
    summary.rejects_by_reason = dict(collections.Counter(new_rejects.column("reason").to_pylist()))

    reasons = dict(zip(rejected_paths, new_rejects.column("reason").to_pylist()))
    content.update((p, sha or "") for p, sha in zip(rejected_paths, new_rejects.column("sha256").to_pylist()))
    fresh = processed_rows(plan, summary.run_id, content, reasons, faces_by_path)
    manifest = merge_manifest(previous, listing, fresh)
    storage.write_json_atomic(layout.preprocess_settings(out, plan.settings), settings)
    write_rejects(out, manifest, new_rejects)  # rows the manifest does not name yet are not live
    storage.write_table_atomic(layout.manifest(out), manifest)


def _saved_settings(out: str, made_with: str | None) -> dict[str, Any] | None:
    """The settings a fingerprint stood for, as the run that published it recorded them."""
    uri = layout.preprocess_settings(out, made_with) if made_with else None
    return storage.read_json(uri) if uri and storage.exists(uri) else None


def _remove_leftovers(out: str, manifest: pa.Table) -> None:
    """Staging and shard files of runs the manifest does not name: what runs that died left behind.

    Called under the output lock, so no other run can be writing them."""
    storage.delete_dir(layout.staging_root(out))
    prune_rejects(out, manifest)
    for orphan in orphan_shard_files(out, storage.list_dirs(layout.shards_root(out)), manifest):
        storage.delete_file(orphan)


def _partition_dirs(faces_dir: str) -> list[str]:
    fs, path = storage.resolve(faces_dir)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    return sorted(
        storage.join(faces_dir, info.base_name)
        for info in fs.get_file_info(pafs.FileSelector(path))
        if info.type == pafs.FileType.Directory and info.base_name.startswith(f"{PARTITION_COLUMN}=")
    )


def _fill_live_counts(summary: PreprocessSummary, manifest: pa.Table) -> None:
    summary.live_files = manifest.num_rows
    summary.live_rejects = pc.sum(pc.equal(manifest.column("status"), "rejected")).as_py() or 0
    leaked = manifest.filter(manifest.column("leakage"))
    summary.leakage = leaked.column("path").to_pylist()


def _check_reject_share(summary: PreprocessSummary, max_share: float) -> None:
    if summary.live_files and summary.live_rejects / summary.live_files > max_share:
        raise PreprocessError(
            f"{summary.live_rejects} of {summary.live_files} input files were rejected "
            f"({summary.live_rejects / summary.live_files:.0%} > preprocess.max_reject_share "
            f"{max_share:.0%}); see rejects.parquet for the reasons"
        )
