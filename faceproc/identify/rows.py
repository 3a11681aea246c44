"""Which identity rows are live: the identities folder's manifest decides, as preprocessing's does.

A shard file counts only when the manifest names its run, and a row only while the manifest lists its
photo as `ok` with the same content and the same run: a photo identified again (new content, or a new
model version) has its older rows dropped without rewriting their file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from faceproc.core import layout, storage
from faceproc.core.manifest import live_runs

KEY_COLUMNS = ("photo_path", "photo_sha256", "run_id")


def live_identity_files(root: str, manifest: pa.Table) -> list[str]:
    runs = live_runs(manifest)
    return [uri for uri in storage.list_files(layout.identity_shards(root), ".parquet")
            if layout.run_of_shard(uri) in runs]


def orphan_identity_files(root: str, manifest: pa.Table) -> list[str]:
    """Shard files of runs that died before their commit (or whose every photo was redone since)."""
    runs = live_runs(manifest)
    return [uri for uri in storage.list_files(layout.identity_shards(root), ".parquet")
            if layout.run_of_shard(uri) not in runs]


def iter_live_identities(root: str, manifest: pa.Table, columns: list[str],
                         batch_size: int = 256) -> Iterator[pa.Table]:
    """The live identity rows in small tables, with memory bounded by `batch_size` (driver readers:
    the summary and the report)."""
    keys = _live_keys(manifest)
    wanted = list(dict.fromkeys([*columns, *KEY_COLUMNS]))
    for uri in live_identity_files(root, manifest):
        fs, path = storage.resolve(uri)
        with fs.open_input_file(path) as stream:
            for batch in pq.ParquetFile(stream).iter_batches(batch_size=batch_size, columns=wanted):
                table = pa.Table.from_batches([batch])
                joined = pc.binary_join_element_wise(*(table[name] for name in KEY_COLUMNS), "\0")
                live = table.filter(pc.is_in(joined, value_set=keys))
                if live.num_rows:
                    yield live.select(columns)


def _live_keys(manifest: pa.Table) -> pa.Array:
    ok = manifest.filter(pc.equal(manifest["status"], "ok"))
    return pc.binary_join_element_wise(ok["path"], ok["sha256"], ok["run_id"], "\0").combine_chunks()
