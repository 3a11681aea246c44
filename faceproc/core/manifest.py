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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faceproc.core import layout, storage
from faceproc.core.schema import MANIFEST_SCHEMA


@dataclass
class Plan:
    """What a run must do, by comparing the input listing with the published manifest."""

    settings: str  # the fingerprint of the preprocessing settings the processed rows will carry
    to_process: pa.Table  # the listing's rows (discover.LISTING_SCHEMA and `sha256`) of the files to read
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    # unchanged files made with other preprocessing settings, processed again
    resettled_paths: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    old_settings: set[str | None] = field(default_factory=set)  # the fingerprints they were made with
    hashed: int = 0  # files the driver read to decide (old rows, unreadable last time, verify_hashes)
    relisted: int = 0  # unchanged files whose listing entry the manifest must learn (content decided)

    @property
    def has_work(self) -> bool:
        return self.to_process.num_rows > 0 or self.deleted > 0

    @property
    def resettled(self) -> int:
        return len(self.resettled_paths)

    @property
    def paths(self) -> list[str]:
        return self.to_process["path"].to_pylist()


class AccountingError(RuntimeError):
    """A run's staged output does not account for every file it processed; nothing was published."""


def check_accounting(plan: Plan, face_paths: set[str], rejected_paths: list[str]) -> None:
    """Every processed file is a face or a reject, never both, never neither."""
    expected = set(plan.paths)
    both = face_paths & set(rejected_paths)
    missing = expected - face_paths - set(rejected_paths)
    if both or missing:
        raise AccountingError(
            f"accounting failed: {len(missing)} file(s) produced neither a face nor a reject "
            f"(e.g. {sorted(missing)[:3]}), {len(both)} produced both; nothing was published"
        )


def load_manifest(out: str, columns: Sequence[str] | None = None) -> pa.Table:
    """The published manifest, or an empty one before the first run (older manifests gain nulls);
    with `columns`, only those: a command that asks a question of a million rows reads what it asks."""
    schema = pa.schema([MANIFEST_SCHEMA.field(name) for name in (columns or MANIFEST_SCHEMA.names)])
    uri = layout.manifest(out)
    if not storage.exists(uri):
        return schema.empty_table()
    present = set(storage.read_schema(uri).names)
    table = storage.read_table(uri, columns=[name for name in schema.names if name in present])
    for name in schema.names:
        if name not in present:  # written before rows recorded it
            table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    return table.select(schema.names).cast(schema)


def hash_where_needed(listing: pa.Table, manifest: pa.Table, verify: bool,
                      sha256: Callable[[str], str | None]) -> pa.Table:
    """`listing` with a `sha256` column, filled in where the listing cannot decide: files the
    manifest knows without a listing entry, and with `verify` every file it knows; null elsewhere.
    `sha256(path)` returns None for a file it cannot read (processed again, rejected as read_error)."""
    from concurrent.futures import ThreadPoolExecutor

    known = manifest if verify else manifest.filter(pc.is_null(manifest["size"]))
    needed = pc.is_in(_values(listing["path"]), value_set=_values(known["path"]))
    paths = listing["path"].filter(needed).to_pylist()
    with ThreadPoolExecutor(max_workers=8) as pool:  # hashlib and pyarrow's reads release the GIL
        hashes = pa.array(list(pool.map(sha256, paths)), pa.string())
    column = pa.nulls(listing.num_rows, pa.string())
    if paths:
        column = pc.replace_with_mask(column, needed, hashes)
    return listing.append_column("sha256", column)


def plan_run(listing: pa.Table, manifest: pa.Table, settings: str) -> Plan:
    """Files the manifest holds with the same listing entry (or, when hashed, the same content) and
    the same preprocessing settings fingerprint are not processed again; with other settings they
    are (`resettled`). `listing` is `hash_where_needed`'s; one vectorised join, no object per file."""
    known = manifest.select(["path", "sha256", "size", "mtime_ns", "settings"]).rename_columns(
        ["path", "known_sha256", "known_size", "known_mtime_ns", "known_settings"])
    known = known.append_column("known", pa.array(np.ones(known.num_rows, bool)))
    order = listing.append_column("listing_order", pa.array(np.arange(listing.num_rows)))
    rows = order.join(known, keys="path", join_type="left outer")  # unordered: only to_process is sorted back
    is_known = pc.fill_null(rows["known"], False)
    hashed = pc.and_(is_known, pc.is_valid(rows["sha256"]))
    same_entry = pc.fill_null(pc.and_(pc.equal(rows["size"], rows["known_size"]),
                                      _equal_or_both_null(rows["mtime_ns"], rows["known_mtime_ns"])), False)
    same_content = pc.fill_null(pc.and_(pc.not_equal(rows["known_sha256"], ""),
                                        pc.equal(rows["sha256"], rows["known_sha256"])), False)
    same = pc.and_(is_known, pc.if_else(hashed, same_content, same_entry))
    same_settings = pc.fill_null(pc.equal(rows["known_settings"], settings), False)
    unchanged = pc.and_(same, same_settings)
    resettled = pc.and_(same, pc.invert(same_settings))
    return Plan(
        settings,
        to_process=rows.filter(pc.invert(unchanged)).sort_by("listing_order").select(listing.column_names),
        new=_count(pc.invert(is_known)),
        changed=_count(pc.and_(is_known, pc.invert(same))),
        unchanged=_count(unchanged),
        deleted=_count(pc.invert(pc.is_in(manifest["path"], value_set=_values(listing["path"])))),
        resettled_paths=_values(rows["path"].filter(resettled)),
        old_settings=set(pc.unique(rows["known_settings"].filter(resettled)).to_pylist()),
        hashed=_count(hashed),
        relisted=_count(pc.and_(pc.and_(hashed, same), pc.invert(same_entry))),
    )


def _equal_or_both_null(left: pa.ChunkedArray, right: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.coalesce(pc.equal(left, right), pc.and_(pc.is_null(left), pc.is_null(right)))


def _values(column: pa.ChunkedArray) -> pa.Array:
    """A column as one array, the form `is_in`'s value set takes."""
    return column.combine_chunks()


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def processed_rows(plan: Plan, run_id: str, content: dict[str, str], reasons: dict[str, str],
                   face_rows: dict[str, int]) -> pa.Table:
    """The manifest rows of the files this run processed: SHA-256 as the worker that read the file
    computed it (`content`), rejected where `reasons` names the file; `merge_manifest` adds the listing."""
    todo, paths = plan.to_process, plan.paths
    count = len(paths)
    return pa.table(
        {
            "path": todo["path"],
            "sha256": [content.get(path) or "" for path in paths],
            "split": todo["split"],
            "label": todo["label"],
            "status": ["rejected" if path in reasons else "ok" for path in paths],
            "reason": [reasons.get(path) for path in paths],
            "face_rows": [face_rows.get(path, 0) for path in paths],
            "leakage": pa.array(np.zeros(count, bool)),
            "run_id": [run_id] * count,
            "settings": [plan.settings] * count,
            "size": pa.nulls(count, pa.int64()),
            "mtime_ns": pa.nulls(count, pa.int64()),
        },
        schema=MANIFEST_SCHEMA,
    )


def merge_manifest(previous: pa.Table, listing: pa.Table, fresh: pa.Table) -> pa.Table:
    """Keep previous rows still listed and not reprocessed, add this run's rows, flag leakage;
    every readable row gets the listing entry it was seen with this run (so the next run need not
    read it)."""
    keep = pc.and_(pc.is_in(previous["path"], value_set=_values(listing["path"])),
                   pc.invert(pc.is_in(previous["path"], value_set=_values(fresh["path"]))))
    merged = pa.concat_tables([previous.filter(keep), fresh.cast(MANIFEST_SCHEMA)]).drop_columns(["size", "mtime_ns"])
    entries = listing.select(["path", "size", "mtime_ns"])
    merged = merged.join(entries, keys="path", join_type="left outer")
    readable = pc.fill_null(pc.not_equal(merged["sha256"], ""), False)  # no entry: read again next run
    for name in ("size", "mtime_ns"):
        merged = merged.set_column(merged.schema.get_field_index(name), name,
                                   pc.if_else(readable, merged[name], pa.scalar(None, pa.int64())))
    merged = merged.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA).sort_by("path")
    return merged.set_column(merged.schema.get_field_index("leakage"), "leakage", leakage_flags(merged))


def leakage_flags(manifest: pa.Table) -> pa.ChunkedArray:
    """True for files whose content (SHA-256) also appears in another split."""
    placed = pc.fill_null(pc.and_(pc.not_equal(manifest["split"], ""), pc.not_equal(manifest["sha256"], "")), False)
    # files outside the layout, or unreadable, belong to no split
    splits = manifest.filter(placed).group_by("sha256").aggregate([("split", "count_distinct")])
    shared = splits.filter(pc.greater(splits["split_count_distinct"], 1))["sha256"]
    return pc.and_(placed, pc.is_in(manifest["sha256"], value_set=_values(shared)))


def same_content_other_people(manifest: pa.Table) -> pa.Table:
    """The live files of a split whose content (SHA-256) is also filed under another person of that
    split: a mislabelled copy, which a model learns as both people. Sorted by content, then path."""
    live = manifest.filter(pc.fill_null(pc.and_(pc.equal(manifest["status"], "ok"),
                                                pc.not_equal(manifest["split"], "")), False))
    people = live.group_by(["split", "sha256"]).aggregate([("label", "count_distinct")])
    shared = people.filter(pc.greater(people["label_count_distinct"], 1)).select(["split", "sha256"])
    return live.join(shared, keys=["split", "sha256"], join_type="inner").select(live.column_names).sort_by(
        [("sha256", "ascending"), ("path", "ascending")])


def rejected_count(manifest: pa.Table, split: str) -> int:
    """Files of `split` the manifest lists as rejected (counted as errors end to end)."""
    mask = pc.and_(pc.equal(manifest.column("status"), "rejected"), pc.equal(manifest.column("split"), split))
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)


def live_face_rows(manifest: pa.Table, split: str) -> int:
    """Face rows the live (ok) files of `split` hold, as the manifest counts them."""
    return int(pc.sum(_live_files(manifest, split).column("face_rows")).as_py() or 0)


def live_settings(manifest: pa.Table, split: str) -> set[str]:
    """The preprocessing settings fingerprints the face rows of `split`'s live files were made with."""
    return set(pc.unique(_live_files(manifest, split).column("settings")).to_pylist()) - {None}


def live_people(manifest: pa.Table, split: str) -> set[str]:
    """The people (labels) of `split`'s live files."""
    return set(pc.unique(_live_files(manifest, split).column("label")).to_pylist()) - {None}


def split_files(manifest: pa.Table, split: str) -> pa.Table:
    """The manifest rows (or rows of a table shaped like it) of `split`'s files, rejected ones too."""
    return manifest.filter(pc.equal(manifest.column("split"), split))


def _live_files(manifest: pa.Table, split: str) -> pa.Table:
    """The manifest rows of `split`'s live (ok) files."""
    live = pc.and_(pc.equal(manifest.column("status"), "ok"), pc.equal(manifest.column("split"), split))
    return manifest.filter(live)


def live_runs(manifest: pa.Table) -> set[str]:
    """The runs whose shard rows can be live: those the manifest names for an ok file. A run named
    only by rejects (a photo that stays rejected while its neighbours were processed again) holds no
    live row, so its shard files go with the leftovers."""
    return set(pc.unique(manifest.filter(pc.equal(manifest["status"], "ok"))["run_id"]).to_pylist())
