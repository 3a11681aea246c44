"""Live face rows read without Ray, as the report reads them."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from faceproc.core.shards import iter_live_faces, original_rows
from tests.conftest import write_face_shards


def test_iter_live_faces_gives_live_rows_and_nulls_for_columns_an_older_shard_lacks(tmp_path):
    write_face_shards(tmp_path, {"alice": [(10, 10, 10)], "bob": [(200, 200, 200)]}, copies=2)
    (shard,) = (tmp_path / "shards" / "train").glob("*.parquet")
    pq.write_table(pq.read_table(shard).drop_columns(["aligned"]), shard)  # as written before alignment

    rows = [row for table in iter_live_faces(str(tmp_path), "train", ["source_path", "augment_index", "aligned"],
                                             batch_size=1) for row in table.to_pylist()]
    assert sorted((r["source_path"], r["augment_index"]) for r in rows) == [
        ("/photos/train/alice/0.jpg", 0), ("/photos/train/alice/0.jpg", 1),
        ("/photos/train/bob/0.jpg", 0), ("/photos/train/bob/0.jpg", 1)]
    assert {r["aligned"] for r in rows} == {None}


def test_original_rows_keeps_the_original_crops_in_order():
    rows = pa.table({"source_path": ["a", "a", "b", "c", "c"], "augment_index": [0, 1, 0, 2, 0]})
    kept = original_rows(rows)
    assert kept.column("source_path").to_pylist() == ["a", "b", "c"]
    assert set(kept.column("augment_index").to_pylist()) == {0}
