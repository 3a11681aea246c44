from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from faceproc.core import layout
from faceproc.core.commit import read_staged, remove_leftovers, run_staged
from faceproc.core.manifest import AccountingError, load_manifest, plan_run
from faceproc.core.rejects import RejectRows
from faceproc.core.schema import MANIFEST_SCHEMA
from faceproc.preprocess.discover import LISTING_SCHEMA

ROW_SCHEMA = pa.schema([("photo", pa.string()), ("sha", pa.string()), ("copy", pa.int32())])


def _listing(paths):
    files = [{"path": p, "split": "train", "label": "p", "size": 1, "mtime_ns": 1, "layout_error": None} for p in paths]
    table = pa.Table.from_pylist(files, schema=LISTING_SCHEMA)
    return table.append_column("sha256", pa.array([None] * len(paths), pa.string()))


def _stage_faces(staging, rows):
    """What an actor pool leaves: face rows in staged Parquet, rejects in their own folder."""
    faces = staging / "faces"
    faces.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA), faces / "part-0.parquet")


def _reject(staging, path):
    rejects = RejectRows("r1")
    rejects.add(path, "no_face", "none", "s-" + path, "train", "p")
    rejects.stage(str(staging / "rejects"))


def _stage(published, rows, rejected=()):
    def stage(staging):
        staging = Path(staging)
        _stage_faces(staging, rows)
        for path in rejected:
            _reject(staging, path)
        return read_staged(str(staging), [(str(staging / "faces"), str(published))], ROW_SCHEMA, "photo", "sha",
                           ("copy",))
    return stage


def test_a_run_publishes_its_shards_then_commits_the_manifest(tmp_path):
    out, published = tmp_path / "out", tmp_path / "out" / "shards"
    plan = plan_run(_listing(["a", "b", "c"]), MANIFEST_SCHEMA.empty_table(), "s1")
    seen = []
    rows = [{"photo": "a", "sha": "sa", "copy": 0}, {"photo": "a", "sha": "sa", "copy": 1},
            {"photo": "b", "sha": "sb", "copy": 0}]
    manifest = run_staged(str(out), "r1", _listing(["a", "b", "c"]), plan, MANIFEST_SCHEMA.empty_table(),
                          stage=_stage(published, rows, rejected=["c"]), on_staged=seen.append)
    assert seen[0].faces_by_path == {"a": 2, "b": 1} and seen[0].rows["copy"].to_pylist() == [0, 1, 0]
    assert manifest.equals(load_manifest(str(out)))
    by_path = {r["path"]: r for r in manifest.to_pylist()}
    assert {p: (r["status"], r["face_rows"], r["sha256"]) for p, r in by_path.items()} == {
        "a": ("ok", 2, "sa"), "b": ("ok", 1, "sb"), "c": ("rejected", 0, "s-c")}
    assert [f.name for f in published.iterdir()] == [layout.shard_name("r1", 0)]
    assert pq.read_table(out / "rejects.parquet")["path"].to_pylist() == ["c"]
    assert not (out / "_staging").exists()


def test_a_photo_that_gave_neither_faces_nor_a_reject_stops_the_commit(tmp_path):
    out, published = tmp_path / "out", tmp_path / "out" / "shards"
    plan = plan_run(_listing(["a", "b"]), MANIFEST_SCHEMA.empty_table(), "s1")
    with pytest.raises(AccountingError, match="1 file\\(s\\) produced neither"):
        run_staged(str(out), "r1", _listing(["a", "b"]), plan, MANIFEST_SCHEMA.empty_table(),
                   stage=_stage(published, [{"photo": "a", "sha": "sa", "copy": 0}]))
    assert not (out / "manifest.parquet").exists() and not published.exists()
    assert not (out / "_staging").exists()


def test_nothing_staged_reads_back_typed_and_empty(tmp_path):
    staged = read_staged(str(tmp_path / "staging"), [(str(tmp_path / "staging" / "faces"), str(tmp_path))],
                         ROW_SCHEMA, "photo", "sha", ("copy",))
    assert staged.rows.schema == ROW_SCHEMA and staged.rows.num_rows == 0
    assert staged.shards == [] and staged.rejects.num_rows == 0


def test_the_shard_of_a_run_named_only_by_rejects_goes_with_the_leftovers(tmp_path):
    out, published = tmp_path / "out", tmp_path / "out" / "shards"
    first = plan_run(_listing(["a", "b"]), MANIFEST_SCHEMA.empty_table(), "s1")
    manifest = run_staged(str(out), "r1", _listing(["a", "b"]), first, MANIFEST_SCHEMA.empty_table(),
                          stage=_stage(published, [{"photo": "a", "sha": "sa", "copy": 0}], rejected=["b"]))
    changed = _listing(["a", "b"]).set_column(3, "size", pa.array([2, 1], pa.int64()))  # a's new content, b as it was
    manifest = run_staged(str(out), "r2", changed, plan_run(changed, manifest, "s1"), manifest,
                          stage=_stage(published, [{"photo": "a", "sha": "sa2", "copy": 0}]))
    assert set(manifest["run_id"].to_pylist()) == {"r1", "r2"}  # b's reject still names r1, whose shard is all dead
    remove_leftovers(str(out), manifest, [str(published)])
    assert [f.name for f in published.iterdir()] == [layout.shard_name("r2", 0)]


def test_leftovers_of_a_run_the_manifest_does_not_name_are_removed(tmp_path):
    out, published = tmp_path / "out", tmp_path / "out" / "shards"
    plan = plan_run(_listing(["a"]), MANIFEST_SCHEMA.empty_table(), "s1")
    manifest = run_staged(str(out), "r1", _listing(["a"]), plan, MANIFEST_SCHEMA.empty_table(),
                          stage=_stage(published, [{"photo": "a", "sha": "sa", "copy": 0}]))
    dead = published / layout.shard_name("r0-died", 0)
    dead.write_bytes(b"left by a run that died before its commit")
    (out / "_staging" / "r0-died").mkdir(parents=True)
    remove_leftovers(str(out), manifest, [str(published)])
    assert [f.name for f in published.iterdir()] == [layout.shard_name("r1", 0)]
    assert not (out / "_staging").exists()
