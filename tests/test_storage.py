import pyarrow as pa

from faceproc import storage


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    out = str(tmp_path / "out")
    storage.write_json_atomic(storage.join(out, "a", "x.json"), {"k": 1})
    storage.write_table_atomic(storage.join(out, "a", "t.parquet"), pa.table({"v": [1, 2]}))
    storage.write_json_atomic(storage.join(out, "a", "x.json"), {"k": 2})
    assert sorted(p.name for p in (tmp_path / "out" / "a").iterdir()) == ["t.parquet", "x.json"]
    assert storage.read_json(storage.join(out, "a", "x.json")) == {"k": 2}
    assert storage.read_table(storage.join(out, "a", "t.parquet")).column("v").to_pylist() == [1, 2]


def test_list_files_and_uris(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b.parquet").write_bytes(b"")
    (tmp_path / "d" / "a.parquet").write_bytes(b"")
    (tmp_path / "d" / "c.txt").write_bytes(b"")
    uri = f"file://{tmp_path}/d"
    assert storage.list_files(uri, ".parquet") == [f"{uri}/a.parquet", f"{uri}/b.parquet"]
    assert storage.list_files(str(tmp_path / "missing")) == []
    assert storage.exists(f"{uri}/c.txt") and not storage.exists(f"{uri}/zz")


def test_compressed_names_are_read_as_stored_bytes(tmp_path):
    """pyarrow would gunzip a `.gz` on read by default; hashes and decoding need the stored bytes."""
    import gzip
    import hashlib

    path = tmp_path / "photo.jpg.gz"
    path.write_bytes(gzip.compress(b"not really a photo"))
    assert storage.read_bytes(str(path)) == path.read_bytes()
    assert storage.sha256(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()
