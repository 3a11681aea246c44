import pyarrow as pa
import pytest

from faceproc.core import storage


def test_atomic_writes_leave_no_temporary_files(tmp_path):
    out = str(tmp_path / "out")
    storage.write_json_atomic(storage.join(out, "a", "x.json"), {"k": 1})
    storage.write_table_atomic(storage.join(out, "a", "t.parquet"), pa.table({"v": [1, 2]}))
    storage.write_json_atomic(storage.join(out, "a", "x.json"), {"k": 2})
    assert sorted(p.name for p in (tmp_path / "out" / "a").iterdir()) == ["t.parquet", "x.json"]
    assert storage.read_json(storage.join(out, "a", "x.json")) == {"k": 2}
    assert storage.read_table(storage.join(out, "a", "t.parquet")).column("v").to_pylist() == [1, 2]



def test_an_atomic_write_that_fails_leaves_no_temporary_file(tmp_path):
    (tmp_path / "x.json" / "in-the-way").mkdir(parents=True)  # a folder where the file should go
    with pytest.raises(OSError):
        storage.write_json_atomic(str(tmp_path / "x.json"), {"k": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]

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


def _tree(root) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_replace_dir_swaps_a_whole_directory_in(tmp_path):
    target, staging = tmp_path / "models" / "cnn", tmp_path / "models" / ".cnn.staging"
    target.mkdir(parents=True)
    (target / "model.keras").write_text("old model")
    (target / "stale.json").write_text("only in the old version")
    staging.mkdir()
    (staging / "model.keras").write_text("new model")
    (staging / "classes.json").write_text('["a"]')
    storage.replace_dir(str(staging), str(target))
    assert _tree(target) == {"model.keras": "new model", "classes.json": '["a"]'}
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["cnn"]
    assert storage.list_dirs(str(tmp_path / "models")) == ["cnn"]


def test_restore_dir_undoes_a_swap_that_died_halfway(tmp_path):
    models = tmp_path / "models"
    (models / ".cnn.previous").mkdir(parents=True)  # moved aside, the new one never moved in
    (models / ".cnn.previous" / "model.keras").write_text("old model")
    storage.restore_dir(str(models / "cnn"))
    assert _tree(models / "cnn") == {"model.keras": "old model"}
    assert not (models / ".cnn.previous").exists()

    (models / ".cnn.previous").mkdir()  # died after the new one moved in: the old one goes
    (models / ".cnn.previous" / "model.keras").write_text("older model")
    storage.restore_dir(str(models / "cnn"))
    assert _tree(models / "cnn") == {"model.keras": "old model"}
    assert not (models / ".cnn.previous").exists()


def test_a_gcs_client_gives_up_in_a_minute_unless_told_otherwise():
    """pyarrow's default of 15 minutes of retries made a command without credentials hang that long."""
    import datetime

    def retry_limit(uri: str) -> datetime.timedelta:
        fs, path = storage.resolve(uri)
        assert path == "bucket/photos"
        return fs.__reduce__()[1][0]["retry_time_limit"]  # the options it was made with

    assert retry_limit("gs://bucket/photos") == datetime.timedelta(seconds=storage.GCS_RETRY_SECONDS) \
        == datetime.timedelta(minutes=1)
    assert retry_limit("gs://bucket/photos?retry_limit_seconds=5") == datetime.timedelta(seconds=5)
