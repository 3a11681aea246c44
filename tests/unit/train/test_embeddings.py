"""The FaceNet embedding cache: one file per shard, missing shards embedded together, then reused (slow)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from faceproc.train.embeddings import ensure_embeddings
from tests.conftest import FACENET_WEIGHTS, write_face_shards

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def test_missing_shards_are_embedded_in_one_pass_and_then_reused(tmp_path):
    if not FACENET_WEIGHTS.is_file():
        pytest.fail(f"{FACENET_WEIGHTS} is missing: run `faceproc fetch-data` first")
    out = tmp_path / "out"
    write_face_shards(out, {"red": [(200, 40, 40), (220, 60, 50)]}, run_id="20260101T000000Z-first0", copies=1)
    write_face_shards(out, {"blue": [(40, 40, 200)]}, run_id="20260102T000000Z-second", copies=2)
    shards = sorted((out / "shards" / "train").glob("*.parquet"))
    assert len(shards) == 2

    files = ensure_embeddings(str(out), str(FACENET_WEIGHTS), "train")
    assert sorted(os.path.basename(f) for f in files) == [shard.name for shard in shards]
    for shard, cached in zip(shards, sorted(files)):
        faces = pq.read_table(shard, columns=["source_path", "augment_index"]).to_pylist()
        embedded = pq.read_table(cached)
        assert sorted(map(tuple, (row.values() for row in faces))) == sorted(
            zip(embedded.column("source_path").to_pylist(), embedded.column("augment_index").to_pylist()))
        vectors = np.stack(embedded.column("embedding").to_numpy(zero_copy_only=False))
        assert vectors.shape == (len(faces), 128) and np.isfinite(vectors).all()
        assert "path" not in embedded.column_names  # the shard column is for routing only

    written = {f: os.stat(f).st_mtime_ns for f in files}
    assert ensure_embeddings(str(out), str(FACENET_WEIGHTS), "train") == files
    assert {f: os.stat(f).st_mtime_ns for f in files} == written  # nothing embedded again
