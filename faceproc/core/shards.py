"""Where face shards live and which of their rows are in use.

Shard files are named `<run_id>.<index>.parquet`; a file belongs to the published state only when the
manifest still names its run, and a row only while the manifest lists its source file as `ok`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from faceproc.core import layout, storage
from faceproc.core.manifest import live_keys, live_runs, load_manifest
from faceproc.core.schema import FACE_SCHEMA

LIVE_KEY_COLUMNS = ("source_path", "source_sha256")  # what the live-row filter matches against the manifest


def live_shard_files(out: str, split: str, manifest: pa.Table | None = None) -> list[str]:
    """Shard files of published runs; files left behind by a run that died are not included."""
    runs = live_runs(load_manifest(out) if manifest is None else manifest)
    return [uri for uri in storage.list_files(layout.shard_dir(out, split), ".parquet")
            if layout.run_of_shard(uri) in runs]


def orphan_shard_files(out: str, splits: list[str], manifest: pa.Table) -> list[str]:
    runs = live_runs(manifest)
    return [
        uri
        for split in splits
        for uri in storage.list_files(layout.shard_dir(out, split), ".parquet")
        if layout.run_of_shard(uri) not in runs
    ]


def read_live_faces(out: str, split: str, columns: list[str] | None = None):
    """A Ray Dataset of the live face rows of `split` (None when the split has no shards)."""
    import ray.data

    manifest = load_manifest(out)
    files = live_shard_files(out, split, manifest)
    if not files:
        return None
    fs, _ = storage.resolve(out)
    paths = [storage.resolve(uri)[1] for uri in files]
    read = None if columns is None else list(dict.fromkeys([*columns, *LIVE_KEY_COLUMNS]))
    live = keep_live_rows(ray.data.read_parquet(paths, filesystem=fs, columns=read), manifest)
    return live if columns is None or read == columns else live.select_columns(columns)


def iter_live_faces(out: str, split: str, columns: list[str], manifest: pa.Table | None = None,
                    batch_size: int = 64) -> Iterator[pa.Table]:
    """The live face rows of `split` in small Arrow tables, without Ray: for readers in the driver
    (the report) that must see exactly what evaluation sees, with memory bounded by `batch_size`."""
    manifest = load_manifest(out) if manifest is None else manifest
    keys = _live_key_array(manifest)
    wanted = list(dict.fromkeys([*columns, *LIVE_KEY_COLUMNS]))
    for uri in live_shard_files(out, split, manifest):
        fs, path = storage.resolve(uri)
        with fs.open_input_file(path) as stream:
            shard = pq.ParquetFile(stream)
            present = [name for name in wanted if name in shard.schema_arrow.names]
            for batch in shard.iter_batches(batch_size=batch_size, columns=present):
                live = _live_rows(pa.Table.from_batches([batch]), keys)
                for name in set(columns) - set(present):  # a column shards of an earlier version lack
                    live = live.append_column(name, pa.nulls(live.num_rows, FACE_SCHEMA.field(name).type))
                if live.num_rows:
                    yield live.select(columns)


def originals(dataset):
    """Only the original crops (augment_index 0) of a Ray Dataset of face rows."""
    from ray.data.expressions import col

    return dataset.filter(expr=col("augment_index") == 0)


def keep_live_rows(dataset, manifest: pa.Table):
    """Rows whose (source_path, source_sha256) the manifest lists as ok; a vectorised filter."""
    return dataset.map_batches(_live_rows, batch_format="pyarrow", fn_kwargs={"keys": _live_key_array(manifest)})


def _live_key_array(manifest: pa.Table) -> pa.Array:
    return pa.array(sorted(f"{path}\0{sha}" for path, sha in live_keys(manifest)), pa.string())


def _live_rows(table: pa.Table, keys: pa.Array) -> pa.Table:
    joined = pc.binary_join_element_wise(table["source_path"], table["source_sha256"], "\0")
    return table.filter(pc.is_in(joined, value_set=keys))
