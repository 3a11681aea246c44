"""The manifest: one row per input file, the commit point of every preprocessing run.

A run's shard files become live only when the manifest naming their run is published; shard rows
are live only while the manifest still lists their (source_path, source_sha256) as `ok`. That is what
lets a rerun skip unchanged files, replace changed ones and drop deleted ones without rewriting
anything already published, and what makes files left by a run that died invisible.

Change detection reads no photo: a file whose listing entry (size and modification time) matches
its manifest row is unchanged. Content hashes come from the workers that read the bytes anyway; the
driver hashes only rows that lack a listing entry (written by an earlier faceproc, or unreadable
last time) and, with `preprocess.verify_hashes`, every known file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from faceproc.core import layout, storage
from faceproc.core.schema import MANIFEST_SCHEMA


@dataclass(frozen=True)
class FileState:
    """One input file as listed; `sha256` only when the driver hashed it (else the worker does)."""

    path: str
    split: str | None
    label: str | None
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None


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
    hashed: int = 0  # files the driver read to decide (old rows, unreadable last time, verify_hashes)
    relisted: int = 0  # unchanged files whose listing entry the manifest must learn (content decided)

    @property
    def has_work(self) -> bool:
        return bool(self.to_process) or self.deleted > 0


class AccountingError(RuntimeError):
    """A run's staged output does not account for every file it processed; nothing was published."""


def check_accounting(plan: Plan, face_paths: set[str], rejected_paths: list[str]) -> None:
    """Every processed file is a face or a reject, never both, never neither."""
    expected = {s.path for s in plan.to_process}
    both = face_paths & set(rejected_paths)
    missing = expected - face_paths - set(rejected_paths)
    if both or missing:
        raise AccountingError(
            f"accounting failed: {len(missing)} file(s) produced neither a face nor a reject "
            f"(e.g. {sorted(missing)[:3]}), {len(both)} produced both; nothing was published"
        )


def load_manifest(out: str) -> pa.Table:
    """The published manifest, or an empty one before the first run (older manifests gain nulls)."""
    uri = layout.manifest(out)
    if not storage.exists(uri):
        return MANIFEST_SCHEMA.empty_table()
    table = storage.read_table(uri)
    for name in MANIFEST_SCHEMA.names:
        if name not in table.column_names:  # written before rows recorded it
            table = table.append_column(name, pa.nulls(table.num_rows, MANIFEST_SCHEMA.field(name).type))
    return table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)


def hash_where_needed(current: list[FileState], manifest: pa.Table, verify: bool,
                      sha256: Callable[[str], str | None]) -> list[FileState]:
    """`current` with the content hash filled in where the listing cannot decide: files the
    manifest knows without a listing entry, and with `verify` every file it knows.
    `sha256(path)` returns None for a file it cannot read (processed again, rejected as read_error)."""
    from concurrent.futures import ThreadPoolExecutor

    known = dict(zip(manifest.column("path").to_pylist(), manifest.column("size").to_pylist()))
    needed = [i for i, state in enumerate(current)
              if state.path in known and (verify or known[state.path] is None)]
    out = list(current)
    with ThreadPoolExecutor(max_workers=8) as pool:  # hashlib and pyarrow's reads release the GIL
        for i, sha in zip(needed, pool.map(lambda i: sha256(current[i].path), needed)):
            out[i] = replace(current[i], sha256=sha)
    return out


def plan_run(current: list[FileState], manifest: pa.Table, settings: str) -> Plan:
    """Files the manifest holds with the same listing entry (or, when hashed, the same content) and
    the same preprocessing settings fingerprint are not processed again; with other settings they
    are (`resettled`)."""
    known = {path: (sha, size, mtime, made_with) for path, sha, size, mtime, made_with in zip(
        *(manifest.column(name).to_pylist() for name in ("path", "sha256", "size", "mtime_ns", "settings")))}
    plan = Plan(settings)
    for state in current:
        if state.path not in known:
            plan.new += 1
            plan.to_process.append(state)
            continue
        sha, size, mtime, made_with = known[state.path]
        if state.sha256 is not None:
            same = bool(sha) and state.sha256 == sha
            plan.hashed += 1
            plan.relisted += same and (size, mtime) != (state.size, state.mtime_ns)
        else:
            same = size is not None and (size, mtime) == (state.size, state.mtime_ns)
        if same and made_with == settings:
            plan.unchanged += 1
            continue
        plan.to_process.append(state)
        if same:
            plan.resettled += 1
            plan.old_settings.add(made_with)
        else:
            plan.changed += 1
    current_paths = {s.path for s in current}
    plan.deleted = sum(1 for path in known if path not in current_paths)
    return plan


def processed_rows(plan: Plan, run_id: str, content: dict[str, str], reasons: dict[str, str],
                   face_rows: dict[str, int]) -> pa.Table:
    """The manifest rows of the files this run processed: SHA-256 as the worker that read the file
    computed it (`content`), rejected where `reasons` names the file; `merge_manifest` adds the listing."""
    todo = plan.to_process
    return pa.table(
        {
            "path": [s.path for s in todo],
            "sha256": [content.get(s.path) or "" for s in todo],
            "split": [s.split for s in todo],
            "label": [s.label for s in todo],
            "status": ["rejected" if s.path in reasons else "ok" for s in todo],
            "reason": [reasons.get(s.path) for s in todo],
            "face_rows": [face_rows.get(s.path, 0) for s in todo],
            "leakage": [False] * len(todo),
            "run_id": [run_id] * len(todo),
            "settings": [plan.settings] * len(todo),
            "size": pa.nulls(len(todo), pa.int64()),
            "mtime_ns": pa.nulls(len(todo), pa.int64()),
        },
        schema=MANIFEST_SCHEMA,
    )


def merge_manifest(previous: pa.Table, current: list[FileState], fresh: pa.Table) -> pa.Table:
    """Keep previous rows still present and not reprocessed, add this run's rows, flag leakage;
    every row gets the listing entry it was seen with this run (so the next run need not read it)."""
    replaced = set(fresh.column("path").to_pylist())
    listing = {s.path: (s.size, s.mtime_ns) for s in current}
    keep = [p in listing and p not in replaced for p in previous.column("path").to_pylist()]
    merged = pa.concat_tables([previous.filter(pa.array(keep, pa.bool_())), fresh.cast(MANIFEST_SCHEMA)])
    merged = merged.sort_by("path")
    paths = merged.column("path").to_pylist()
    unreadable = [not sha for sha in merged.column("sha256").to_pylist()]  # no entry: read again next run
    for column, index in (("size", 0), ("mtime_ns", 1)):
        values = [None if bad else listing[p][index] for p, bad in zip(paths, unreadable)]
        merged = merged.set_column(merged.schema.get_field_index(column), column, pa.array(values, pa.int64()))
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
