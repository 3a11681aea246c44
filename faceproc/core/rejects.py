"""OUT/rejects.parquet: one row per input file that gave no face, with the reason.

A run writes this file just before its manifest (the commit), so a run killed between the two
leaves reject rows the manifest does not name. Like shard rows, a reject row is live only when the
manifest lists its (path, sha256, run_id) as rejected; readers go through `read_live_rejects`, and
the next run rewrites the file without the dead rows (`prune_rejects`).
"""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.compute as pc

from faceproc.core import layout, storage
from faceproc.core.schema import REJECT_SCHEMA


def read_live_rejects(out: str, manifest: pa.Table) -> pa.Table:
    """The reject rows the manifest vouches for (empty when there is no rejects file)."""
    uri = layout.rejects(out)
    if not storage.exists(uri):
        return REJECT_SCHEMA.empty_table()
    return keep_live_rejects(storage.read_table(uri).cast(REJECT_SCHEMA), manifest)


def keep_live_rejects(rejects: pa.Table, manifest: pa.Table) -> pa.Table:
    """Rows whose (path, sha256, run_id) the manifest lists as rejected."""
    rejected = manifest.filter(pc.equal(manifest.column("status"), "rejected"))
    live = _keys(rejected.column("path"), rejected.column("sha256"), rejected.column("run_id")).combine_chunks()
    keys = _keys(rejects.column("path"), pc.fill_null(rejects.column("sha256"), ""), rejects.column("run_id"))
    return rejects.filter(pc.is_in(keys, value_set=live))


def write_rejects(out: str, manifest: pa.Table, new_rejects: pa.Table) -> None:
    """Previous rejects still live under `manifest`, plus this run's `new_rejects`, sorted by path."""
    kept = read_live_rejects(out, manifest)
    storage.write_table_atomic(layout.rejects(out), pa.concat_tables([kept, new_rejects]).sort_by("path"))


def prune_rejects(out: str, manifest: pa.Table) -> None:
    """Rewrite the file without the rows of runs that died before their commit, if it has any."""
    uri = layout.rejects(out)
    if not storage.exists(uri):
        return
    rejects = storage.read_table(uri).cast(REJECT_SCHEMA)
    live = keep_live_rejects(rejects, manifest)
    if live.num_rows != rejects.num_rows:
        storage.write_table_atomic(uri, live)


class RejectRows:
    """One worker batch's reject rows (REJECT_SCHEMA), staged under a folder by `stage` for the driver
    to gather at publish time: a Ray Data stream feeds only one sink, the face rows."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.columns: dict[str, list] = {name: [] for name in REJECT_SCHEMA.names}

    def add(self, path: str, reason: str, detail: str, sha256: str, split: str = "", label: str = "") -> None:
        """A file's reject; an empty hash (the file could not be read), split or label is stored as null."""
        row = {"path": path, "reason": reason, "detail": detail, "split": split or None, "label": label or None,
               "sha256": sha256 or None, "run_id": self.run_id}
        for name, value in row.items():
            self.columns[name].append(value)

    def stage(self, rejects_dir: str) -> None:
        """One file per batch with rejects, under a unique name: actors stage side by side."""
        if self.columns["path"]:
            table = pa.table(self.columns, schema=REJECT_SCHEMA)
            storage.write_table_atomic(storage.join(rejects_dir, f"{uuid.uuid4().hex}.parquet"), table)


def read_staged_rejects(rejects_dir: str) -> pa.Table:
    """Every row `RejectRows.stage` wrote under `rejects_dir`, one per path (a retried task may have staged
    the same file twice)."""
    files = storage.list_files(rejects_dir, ".parquet")
    if not files:
        return REJECT_SCHEMA.empty_table()
    table = pa.concat_tables([storage.read_table(uri).cast(REJECT_SCHEMA) for uri in files])
    first: dict[str, int] = {}
    for i, path in enumerate(table.column("path").to_pylist()):
        first.setdefault(path, i)
    return table.take(sorted(first.values()))


def _keys(paths: pa.ChunkedArray, hashes: pa.ChunkedArray, runs: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(paths, hashes, runs, "\0")
