"""The manifest: one row per input file, the commit point of every preprocessing run.

A run's shard files become live only when the manifest naming their run is published; shard rows
are live only while the manifest still lists their (source_path, source_sha256) as `ok`. That is what
lets a rerun skip unchanged files, replace changed ones and drop deleted ones without rewriting
anything already published, and what makes files left by a run that died invisible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from faceproc.core import layout, storage
from faceproc.core.schema import MANIFEST_SCHEMA


@dataclass(frozen=True)
class FileState:
    path: str
    sha256: str
    split: str | None
    label: str | None


@dataclass
class Plan:
    """What a run must do, by comparing the input tree with the published manifest."""

    settings: str  # the fingerprint of the preprocessing settings the processed rows will carry
    to_process: list[FileState] = field(default_factory=list)
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    resettled: int = 0  # unchanged files made with other preprocessing settings, processed again
    old_settings: set[str | None] = field(default_factory=set)  # the fingerprints they were made with

    @property
    def has_work(self) -> bool:
        return bool(self.to_process) or self.deleted > 0


def load_manifest(out: str) -> pa.Table:
    """The published manifest, or an empty one before the first run."""
    uri = layout.manifest(out)
    if not storage.exists(uri):
        return MANIFEST_SCHEMA.empty_table()
    table = storage.read_table(uri)
    if "settings" not in table.column_names:  # written before rows recorded their settings
        table = table.append_column("settings", pa.nulls(table.num_rows, pa.string()))
    return table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)


def plan_run(current: list[FileState], manifest: pa.Table, settings: str) -> Plan:
    """Files whose (path, sha256) the manifest already holds with the same preprocessing settings
    fingerprint are not processed again; with other settings they are (`resettled`)."""
    known = {path: (sha, made_with) for path, sha, made_with in zip(
        manifest.column("path").to_pylist(), manifest.column("sha256").to_pylist(),
        manifest.column("settings").to_pylist())}
    plan = Plan(settings)
    for state in current:
        previous, made_with = known.get(state.path, (None, None))
        if previous == state.sha256 and made_with == settings:
            plan.unchanged += 1
            continue
        plan.to_process.append(state)
        if previous is None:
            plan.new += 1
        elif previous == state.sha256:
            plan.resettled += 1
            plan.old_settings.add(made_with)
        else:
            plan.changed += 1
    current_paths = {s.path for s in current}
    plan.deleted = sum(1 for path in known if path not in current_paths)
    return plan


def merge_manifest(previous: pa.Table, current_paths: set[str], fresh: pa.Table) -> pa.Table:
    """Keep previous rows still present and not reprocessed, add this run's rows, flag leakage."""
    replaced = set(fresh.column("path").to_pylist())
    keep = [p in current_paths and p not in replaced for p in previous.column("path").to_pylist()]
    merged = pa.concat_tables([previous.filter(pa.array(keep, pa.bool_())), fresh.cast(MANIFEST_SCHEMA)])
    merged = merged.sort_by("path")
    return merged.set_column(
        merged.schema.get_field_index("leakage"), "leakage", leakage_flags(merged)
    )


def leakage_flags(manifest: pa.Table) -> pa.Array:
    """True for files whose content (SHA-256) also appears in another split."""
    splits_by_sha: dict[str, set[str]] = {}
    pairs = list(zip(manifest.column("sha256").to_pylist(), manifest.column("split").to_pylist()))
    for sha, split in pairs:
        if split and sha:  # files outside the layout, or unreadable, belong to no split
            splits_by_sha.setdefault(sha, set()).add(split)
    return pa.array([bool(split) and len(splits_by_sha.get(sha, ())) > 1 for sha, split in pairs], pa.bool_())


def live_keys(manifest: pa.Table) -> set[tuple[str, str]]:
    """(path, sha256) of the files whose face rows are in use."""
    ok = manifest.filter(pc.equal(manifest.column("status"), "ok"))
    return set(zip(ok.column("path").to_pylist(), ok.column("sha256").to_pylist()))


def rejected_count(manifest: pa.Table, split: str) -> int:
    """Files of `split` the manifest lists as rejected (counted as errors end to end)."""
    mask = pc.and_(pc.equal(manifest.column("status"), "rejected"), pc.equal(manifest.column("split"), split))
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)


def live_runs(manifest: pa.Table) -> set[str]:
    return set(manifest.column("run_id").to_pylist())
