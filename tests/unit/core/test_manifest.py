import pyarrow as pa

from faceproc.core.manifest import FileState, leakage_flags, live_keys, merge_manifest, plan_run
from faceproc.core.schema import MANIFEST_SCHEMA


def _manifest(rows):
    cols = {name: [r.get(name) for r in rows] for name in MANIFEST_SCHEMA.names}
    return pa.table(cols, schema=MANIFEST_SCHEMA)


def _row(path, sha, split="train", status="ok", run="r1"):
    return {"path": path, "sha256": sha, "split": split, "label": "p", "status": status,
            "reason": None, "face_rows": 1, "leakage": False, "run_id": run}


def test_plan_new_changed_unchanged_deleted():
    previous = _manifest([_row("a", "1"), _row("b", "2"), _row("gone", "3")])
    current = [FileState("a", "1", "train", "p"), FileState("b", "22", "train", "p"),
               FileState("c", "4", "val", "p")]
    plan = plan_run(current, previous)
    assert (plan.new, plan.changed, plan.unchanged, plan.deleted) == (1, 1, 1, 1)
    assert [s.path for s in plan.to_process] == ["b", "c"]


def test_merge_replaces_changed_drops_deleted_and_flags_leakage():
    previous = _manifest([_row("a", "1"), _row("b", "2"), _row("gone", "3")])
    fresh = _manifest([_row("b", "22", run="r2"), _row("v", "1", split="val", run="r2")])
    merged = merge_manifest(previous, {"a", "b", "v"}, fresh)
    assert merged.column("path").to_pylist() == ["a", "b", "v"]
    assert merged.column("sha256").to_pylist() == ["1", "22", "1"]
    assert merged.column("leakage").to_pylist() == [True, False, True]
    assert live_keys(merged) == {("a", "1"), ("b", "22"), ("v", "1")}


def test_leakage_needs_two_splits():
    table = _manifest([_row("a", "1"), _row("b", "1")])
    assert leakage_flags(table).to_pylist() == [False, False]
