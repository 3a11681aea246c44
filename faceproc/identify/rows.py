"""Identity rows: which are live, and what lets a later model version name them from their embeddings.

The identities folder's manifest decides which rows are live, as preprocessing's does: a shard file
counts only when the manifest names its run, and a row only while the manifest lists its photo as `ok`
with the same content and the same run; a photo identified again (new content, or a new model version)
has its older rows dropped without rewriting their file. A row of a frozen FaceNet keeps the face's
embedding and the weights that made it (`embedder`), so the next version, whose head alone is new,
names the face without running the backbone again (`rename`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
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


def embedding_columns(embedding: np.ndarray | None, embedder: str | None) -> dict[str, Any]:
    """An identity row's `embedding` and `embedder`: the embedder only beside an embedding, so a row
    claims to share embeddings with another model version only when it holds one."""
    if embedding is None:
        return {"embedding": None, "embedder": None}
    return {"embedding": [float(v) for v in embedding], "embedder": embedder}
