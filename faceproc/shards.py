"""Where face shards live and which of their rows are in use.

Shard files are named `<run_id>.<index>.parquet`; a file belongs to the published state only when the
manifest still names its run, and a row only while the manifest lists its source file as `ok`.
"""

from __future__ import annotations

import pyarrow as pa

from faceproc import storage
from faceproc.manifest import live_keys, live_runs, load_manifest

SHARDS_DIR = "shards"


def shard_dir(out: str, split: str) -> str:
    return storage.join(out, SHARDS_DIR, split)


def shard_name(run_id: str, index: int) -> str:
    return f"{run_id}.{index:05d}.parquet"


def run_of(shard_uri: str) -> str:
    return shard_uri.rsplit("/", 1)[-1].split(".", 1)[0]


def live_shard_files(out: str, split: str, manifest: pa.Table | None = None) -> list[str]:
    """Shard files of published runs; files left behind by a run that died are not included."""
    runs = live_runs(load_manifest(out) if manifest is None else manifest)
    return [uri for uri in storage.list_files(shard_dir(out, split), ".parquet") if run_of(uri) in runs]


def orphan_shard_files(out: str, splits: list[str], manifest: pa.Table) -> list[str]:
    runs = live_runs(manifest)
    return [
        uri
        for split in splits
        for uri in storage.list_files(shard_dir(out, split), ".parquet")
        if run_of(uri) not in runs
    ]


def read_live_faces(out: str, split: str, columns: list[str] | None = None):
    """A Ray Dataset of the live face rows of `split` (None when the split has no shards)."""
    import ray.data

    manifest = load_manifest(out)
    files = live_shard_files(out, split, manifest)
    if not files:
        return None
    keys = live_keys(manifest)
    fs, _ = storage.resolve(out)
    paths = [storage.resolve(uri)[1] for uri in files]
    dataset = ray.data.read_parquet(paths, filesystem=fs, columns=columns)
    return dataset.filter(lambda row: (row["source_path"], row["source_sha256"]) in keys)
