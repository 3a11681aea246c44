import pyarrow as pa

from faceproc.core.manifest import FileState, leakage_flags, live_keys, merge_manifest, plan_run
from faceproc.core.schema import MANIFEST_SCHEMA


def _manifest(rows):
    cols = {name: [r.get(name) for r in rows] for name in MANIFEST_SCHEMA.names}
    return pa.table(cols, schema=MANIFEST_SCHEMA)


def _row(path, sha, split="train", status="ok", run="r1", settings="s1"):
    return {"path": path, "sha256": sha, "split": split, "label": "p", "status": status,
            "reason": None, "face_rows": 1, "leakage": False, "run_id": run, "settings": settings}


def test_plan_new_changed_unchanged_deleted():
    previous = _manifest([_row("a", "1"), _row("b", "2"), _row("gone", "3")])
    current = [FileState("a", "1", "train", "p"), FileState("b", "22", "train", "p"),
               FileState("c", "4", "val", "p")]
    plan = plan_run(current, previous, "s1")
    assert (plan.new, plan.changed, plan.unchanged, plan.deleted, plan.resettled) == (1, 1, 1, 1, 0)
    assert [s.path for s in plan.to_process] == ["b", "c"]


def test_plan_redoes_exactly_the_files_made_with_other_settings():
    previous = _manifest([_row("a", "1"), _row("b", "2", settings="old"), _row("r", "3", status="rejected",
                                                                                settings=None)])
    current = [FileState("a", "1", "train", "p"), FileState("b", "2", "train", "p"), FileState("r", "3", "val", "p")]
    plan = plan_run(current, previous, "s1")
    assert [s.path for s in plan.to_process] == ["b", "r"]  # a rejected file is retried with the new settings too
    assert (plan.resettled, plan.unchanged, plan.new, plan.changed) == (2, 1, 0, 0)
    assert plan.old_settings == {"old", None}
    assert plan_run(current, previous, "old").to_process == [current[0], current[2]]


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


def test_a_manifest_from_before_settings_were_recorded_loads_with_unknown_settings(tmp_path):
    import pyarrow.parquet as pq

    from faceproc.core.manifest import load_manifest

    old = _manifest([_row("a", "1")]).drop_columns(["settings"])
    pq.write_table(old, tmp_path / "manifest.parquet")
    loaded = load_manifest(str(tmp_path))
    assert loaded.column("settings").to_pylist() == [None]
    assert plan_run([FileState("a", "1", "train", "p")], loaded, "s1").resettled == 1
