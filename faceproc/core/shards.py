"""Where face shards live and which of their rows are in use.

Shard files are named `<run_id>.<index>.parquet`; a file belongs to the published state only when the
manifest still names its run, and a row only while the manifest lists its source file as `ok`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from faceproc.core import layout, storage
from faceproc.core.manifest import live_runs, load_manifest
from faceproc.core.schema import FACE_SCHEMA

LIVE_KEY_COLUMNS = ("source_path", "source_sha256")  # what the live-row filter matches against the manifest
LIVE_MANIFEST_COLUMNS = ["path", "sha256", "status", "run_id"]  # the manifest columns these filters read


def live_files(folder: str, manifest: pa.Table) -> list[str]:
    """The run-named Parquet files of `folder` whose run the manifest names: the published ones."""
    runs = live_runs(manifest)
    return [uri for uri in storage.list_files(folder, ".parquet") if layout.run_of_shard(uri) in runs]


def orphan_files(folder: str, manifest: pa.Table) -> list[str]:
    """The run-named Parquet files of `folder` whose run the manifest does not name: left by a run that
    died before its commit, or whose every photo was redone since."""
    runs = live_runs(manifest)
    return [uri for uri in storage.list_files(folder, ".parquet") if layout.run_of_shard(uri) not in runs]


def live_key_array(manifest: pa.Table, with_run: bool = False) -> pa.Array:
    """`path\0sha256` (with `with_run`, `\0run_id` too) of every file the manifest lists as ok."""
    ok = manifest.filter(pc.equal(manifest["status"], "ok"))
    parts = [ok["path"], ok["sha256"], *([ok["run_id"]] if with_run else [])]
    return pc.binary_join_element_wise(*parts, "\0").combine_chunks()


def live_rows(table: pa.Table, keys: pa.Array, key_columns: Sequence[str] = LIVE_KEY_COLUMNS) -> pa.Table:
    """The rows of `table` whose key columns, joined like `live_key_array`'s, are in `keys`."""
    joined = pc.binary_join_element_wise(*(table[name] for name in key_columns), "\0")
    return table.filter(pc.is_in(joined, value_set=keys))


def iter_live_rows(files: list[str], keys: pa.Array, key_columns: Sequence[str], columns: list[str],
                   schema: pa.Schema, batch_size: int) -> Iterator[pa.Table]:
    """The live rows of `files` in tables of at most `batch_size` rows, without Ray: for readers in
    the driver, with memory bounded by `batch_size`. A column that files of an earlier version lack
    comes back as nulls of its `schema` type."""
    wanted = list(dict.fromkeys([*columns, *key_columns]))
    for uri in files:
        fs, path = storage.resolve(uri)
        with fs.open_input_file(path) as stream:
            shard = pq.ParquetFile(stream)
            present = [name for name in wanted if name in shard.schema_arrow.names]
            for batch in shard.iter_batches(batch_size=batch_size, columns=present):
                live = live_rows(pa.Table.from_batches([batch]), keys, key_columns)
                for name in set(columns) - set(present):
                    live = live.append_column(name, pa.nulls(live.num_rows, schema.field(name).type))
                if live.num_rows:
                    yield live.select(columns)


def live_shard_files(out: str, split: str, manifest: pa.Table | None = None) -> list[str]:
    """Face shard files of published runs; files left behind by a run that died are not included."""
    return live_files(layout.shard_dir(out, split), live_manifest(out) if manifest is None else manifest)


def read_live_faces(out: str, split: str, columns: list[str] | None = None) -> Any:
    """A Ray Dataset of the live face rows of `split` (None when the split has no shards)."""
    import ray.data

    manifest = live_manifest(out)
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
    manifest = live_manifest(out) if manifest is None else manifest
    yield from iter_live_rows(live_shard_files(out, split, manifest), live_key_array(manifest), LIVE_KEY_COLUMNS,
                              columns, FACE_SCHEMA, batch_size)


def originals(dataset: Any) -> Any:
    """Only the original crops (augment_index 0) of a Ray Dataset of face rows."""
    from ray.data.expressions import col

    return dataset.filter(expr=col("augment_index") == 0)


def original_rows(rows: pa.Table) -> pa.Table:
    """Only the original crops (augment_index 0) of an Arrow table of face rows: `originals` in the driver."""
    return rows.filter(pc.equal(rows["augment_index"], 0))


def numpy_batch(rows: pa.Table | pa.RecordBatch) -> dict[str, Any]:
    """Arrow rows as the numpy batch Ray Data hands a callable class, for calling one in the driver."""
    return {name: rows[name].to_numpy(zero_copy_only=False) for name in rows.column_names}


def live_manifest(out: str) -> pa.Table:
    """What the live-file and live-row filters need of OUT's manifest, and no more."""
    return load_manifest(out, columns=LIVE_MANIFEST_COLUMNS)


def keep_live_rows(dataset: Any, manifest: pa.Table) -> Any:
    """Rows of a Ray Dataset whose (source_path, source_sha256) the manifest lists as ok; a vectorised filter."""
    return dataset.map_batches(live_rows, batch_format="pyarrow", fn_kwargs={"keys": live_key_array(manifest)})
