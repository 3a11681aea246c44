"""Which identity rows are live: the identities folder's manifest decides, as preprocessing's does.

A shard file counts only when the manifest names its run, and a row only while the manifest lists its
photo as `ok` with the same content and the same run: a photo identified again (new content, or a new
model version) has its older rows dropped without rewriting their file.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from faceproc.core import layout
from faceproc.core.schema import IDENTITY_SCHEMA
from faceproc.core.shards import iter_live_rows, live_files, live_key_array

KEY_COLUMNS = ("photo_path", "photo_sha256", "run_id")


def iter_live_identities(root: str, manifest: pa.Table, columns: list[str],
                         batch_size: int = 256) -> Iterator[pa.Table]:
    """The live identity rows in small tables, with memory bounded by `batch_size` (driver readers:
    the summary and the report)."""
    files = live_files(layout.identity_shards(root), manifest)
    keys = live_key_array(manifest, with_run=True)
    yield from iter_live_rows(files, keys, KEY_COLUMNS, columns, IDENTITY_SCHEMA, batch_size)
