"""rejects.parquet rows count only when the manifest names their run; dead runs' rows are pruned."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from faceproc.core.layout import rejects as rejects_uri
from faceproc.core.rejects import prune_rejects, read_live_rejects, write_rejects
from faceproc.core.schema import MANIFEST_SCHEMA, REJECT_SCHEMA


def _manifest(*rows: tuple[str, str, str, str]) -> pa.Table:
    """(path, sha256, status, run_id) rows."""
    return pa.Table.from_pylist(
        [{"path": p, "sha256": s, "split": "val", "label": "x", "status": status,
          "reason": "no_face" if status == "rejected" else None, "face_rows": int(status == "ok"),
          "leakage": False, "run_id": run} for p, s, status, run in rows],
        schema=MANIFEST_SCHEMA)


def _rejects(*rows: tuple[str, str | None, str]) -> pa.Table:
    """(path, sha256, run_id) rows."""
    return pa.Table.from_pylist(
        [{"path": p, "reason": "no_face", "detail": "no face found", "split": "val", "label": "x",
          "sha256": s, "run_id": run} for p, s, run in rows],
        schema=REJECT_SCHEMA)


def _paths(table: pa.Table) -> list[tuple[str, str]]:
    return sorted(zip(table.column("path").to_pylist(), table.column("run_id").to_pylist()))


def test_rows_of_a_run_the_manifest_does_not_name_are_not_live(tmp_path):
    out = str(tmp_path)
    manifest = _manifest(("a.jpg", "h1", "rejected", "run1"), ("b.jpg", "h2", "ok", "run1"),
                         ("c.jpg", "h3", "rejected", "run2"))
    pq.write_table(_rejects(("a.jpg", "h1", "run1"), ("c.jpg", "h3", "run2"),
                            ("d.jpg", "h4", "dead"),     # a run killed before its manifest
                            ("b.jpg", "h2", "dead"),     # the manifest says b gave a face
                            ("a.jpg", "old", "run1")),   # an earlier content of a.jpg
                   rejects_uri(out))
    assert _paths(read_live_rejects(out, manifest)) == [("a.jpg", "run1"), ("c.jpg", "run2")]


def test_a_reject_without_a_hash_matches_the_manifests_empty_hash(tmp_path):
    out = str(tmp_path)
    pq.write_table(_rejects(("gone.jpg", None, "run1")), rejects_uri(out))
    assert read_live_rejects(out, _manifest(("gone.jpg", "", "rejected", "run1"))).num_rows == 1


def test_no_rejects_file_reads_as_empty(tmp_path):
    live = read_live_rejects(str(tmp_path), _manifest(("a.jpg", "h1", "rejected", "run1")))
    assert live.num_rows == 0 and live.schema == REJECT_SCHEMA


def test_write_keeps_live_rows_and_adds_the_new_run(tmp_path):
    out = str(tmp_path)
    pq.write_table(_rejects(("b.jpg", "h2", "run1"), ("a.jpg", "h1", "run1"), ("d.jpg", "h4", "dead")),
                   rejects_uri(out))
    manifest = _manifest(("a.jpg", "h1", "rejected", "run1"), ("b.jpg", "h2new", "ok", "run2"),
                         ("e.jpg", "h5", "rejected", "run2"))
    write_rejects(out, manifest, _rejects(("e.jpg", "h5", "run2")))
    written = pq.read_table(rejects_uri(out))
    assert written.column("path").to_pylist() == ["a.jpg", "e.jpg"]  # sorted; b changed, d dead


def test_prune_rewrites_only_when_dead_rows_are_there(tmp_path):
    out = str(tmp_path)
    manifest = _manifest(("a.jpg", "h1", "rejected", "run1"))
    pq.write_table(_rejects(("a.jpg", "h1", "run1")), rejects_uri(out))
    before = (tmp_path / "rejects.parquet").stat().st_mtime_ns
    prune_rejects(out, manifest)
    assert (tmp_path / "rejects.parquet").stat().st_mtime_ns == before

    pq.write_table(_rejects(("a.jpg", "h1", "run1"), ("d.jpg", "h4", "dead")), rejects_uri(out))
    prune_rejects(out, manifest)
    assert _paths(pq.read_table(rejects_uri(out))) == [("a.jpg", "run1")]
