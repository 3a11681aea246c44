import pyarrow as pa

from faceproc.core.manifest import hash_where_needed, leakage_flags, live_face_rows, merge_manifest, plan_run
from faceproc.core.schema import MANIFEST_SCHEMA
from faceproc.core.shards import live_key_array
from faceproc.preprocess.discover import LISTING_SCHEMA


def _manifest(rows):
    cols = {name: [r.get(name) for r in rows] for name in MANIFEST_SCHEMA.names}
    return pa.table(cols, schema=MANIFEST_SCHEMA)


def _row(path, sha, split="train", status="ok", run="r1", settings="s1", size=10, mtime=100):
    return {"path": path, "sha256": sha, "split": split, "label": "p", "status": status, "reason": None,
            "face_rows": 1, "leakage": False, "run_id": run, "settings": settings, "size": size, "mtime_ns": mtime}


def _file(path, split="train", size=10, mtime=100):
    return {"path": path, "split": split, "label": "p", "size": size, "mtime_ns": mtime, "layout_error": None}


def _listing(files, sha256=None):
    """A listing as `discover` makes it, with the `sha256` column `hash_where_needed` adds."""
    table = pa.Table.from_pylist(files, schema=LISTING_SCHEMA)
    return table.append_column("sha256", pa.array(sha256 or [None] * len(files), pa.string()))


def _paths(plan):
    return plan.to_process["path"].to_pylist()


def test_plan_goes_by_the_listing_entry_new_changed_unchanged_deleted():
    previous = _manifest([_row("a", "1"), _row("b", "2"), _row("t", "5"), _row("gone", "3")])
    current = _listing([_file("a"), _file("b", size=11), _file("t", mtime=101), _file("c", "val")])
    plan = plan_run(current, previous, "s1")
    assert (plan.new, plan.changed, plan.unchanged, plan.deleted, plan.resettled) == (1, 2, 1, 1, 0)
    assert _paths(plan) == ["b", "t", "c"]  # a new size or a new mtime: read again
    assert plan.hashed == 0


def test_plan_redoes_exactly_the_files_made_with_other_settings():
    previous = _manifest([_row("a", "1"), _row("b", "2", settings="old"), _row("r", "3", status="rejected",
                                                                                settings=None)])
    current = _listing([_file("a"), _file("b"), _file("r", "val")])
    plan = plan_run(current, previous, "s1")
    assert _paths(plan) == ["b", "r"]  # a rejected file is retried with the new settings too
    assert (plan.resettled, plan.unchanged, plan.new, plan.changed) == (2, 1, 0, 0)
    assert plan.old_settings == {"old", None}
    assert plan_run(current, previous, "old").to_process.to_pylist() == [current.to_pylist()[0], current.to_pylist()[2]]


def test_the_driver_hashes_only_rows_without_a_listing_entry_unless_asked_to_verify():
    previous = _manifest([_row("a", "1"), _row("old", "2", size=None, mtime=None), _row("moved", "3")])
    current = _listing([_file("a"), _file("old"), _file("moved", mtime=999), _file("new")]).drop_columns(["sha256"])
    read = []

    def sha256(path):
        read.append(path)
        return {"a": "1", "old": "2", "moved": "3", "new": "4"}[path]

    hashed = hash_where_needed(current, previous, verify=False, sha256=sha256)
    assert read == ["old"]
    assert hashed["sha256"].to_pylist() == [None, "2", None, None]
    plan = plan_run(hashed, previous, "s1")
    assert (plan.unchanged, plan.changed, plan.new, plan.hashed, plan.relisted) == (2, 1, 1, 1, 1)

    read.clear()
    verified = plan_run(hash_where_needed(current, previous, verify=True, sha256=sha256), previous, "s1")
    assert sorted(read) == ["a", "moved", "old"]  # every known file; new ones are hashed by the workers
    assert (verified.unchanged, verified.changed, verified.new) == (3, 0, 1)  # same content, new mtime


def test_an_unreadable_file_is_tried_again_on_every_run():
    previous = _manifest([_row("a", "", status="rejected", size=None, mtime=None)])
    listing = _listing([_file("a")]).drop_columns(["sha256"])
    current = hash_where_needed(listing, previous, verify=False, sha256=lambda path: None)
    assert _paths(plan_run(current, previous, "s1")) == ["a"]


def test_merge_replaces_changed_drops_deleted_records_the_listing_and_flags_leakage():
    previous = _manifest([_row("a", "1"), _row("b", "2"), _row("gone", "3")])
    fresh = _manifest([_row("b", "22", run="r2", size=None, mtime=None),
                       _row("v", "1", split="val", run="r2", size=None, mtime=None),
                       _row("x", "", split="val", run="r2", status="rejected", size=None, mtime=None)])
    current = _listing([_file("a", mtime=7), _file("b", size=12), _file("v", "val", size=5), _file("x", "val")])
    merged = merge_manifest(previous, current, fresh)
    assert merged.column("path").to_pylist() == ["a", "b", "v", "x"]
    assert merged.column("sha256").to_pylist() == ["1", "22", "1", ""]
    assert merged.column("size").to_pylist() == [10, 12, 5, None]  # an unreadable file keeps no entry
    assert merged.column("mtime_ns").to_pylist() == [7, 100, 100, None]
    assert merged.column("leakage").to_pylist() == [True, False, True, False]
    assert set(live_key_array(merged).to_pylist()) == {"a\x001", "b\x0022", "v\x001"}


def test_live_face_rows_count_the_ok_files_of_a_split():
    rows = [_row("a", "1", "val"), _row("b", "2", "val"), _row("c", "3", "val", status="rejected"), _row("d", "4")]
    rows[1]["face_rows"] = 3
    rows[2]["face_rows"] = 0
    manifest = _manifest(rows)
    assert [live_face_rows(manifest, split) for split in ("val", "train", "x")] == [4, 1, 0]


def test_leakage_needs_two_splits():
    table = _manifest([_row("a", "1"), _row("b", "1")])
    assert leakage_flags(table).to_pylist() == [False, False]


def test_a_manifest_from_an_earlier_faceproc_loads_with_unknown_settings_and_listing(tmp_path):
    import pyarrow.parquet as pq

    from faceproc.core.manifest import load_manifest

    old = _manifest([_row("a", "1")]).drop_columns(["settings", "size", "mtime_ns"])
    pq.write_table(old, tmp_path / "manifest.parquet")
    loaded = load_manifest(str(tmp_path))
    assert loaded.column("settings").to_pylist() == [None]
    assert loaded.column("size").to_pylist() == [None]
    listing = _listing([_file("a")]).drop_columns(["sha256"])
    current = hash_where_needed(listing, loaded, verify=False, sha256=lambda path: "1")
    plan = plan_run(current, loaded, "s1")
    assert (plan.resettled, plan.hashed) == (1, 1)  # the content says unchanged, the settings are unknown


def test_a_manifest_loads_only_the_columns_asked_for_in_their_order(tmp_path):
    """Only those come back, in that order; one an earlier faceproc did not write comes back as nulls."""
    import pyarrow.parquet as pq

    from faceproc.core.manifest import load_manifest

    assert load_manifest(str(tmp_path), columns=["status", "path"]).schema.names == ["status", "path"]  # none yet
    old = _manifest([_row("a", "1", status="rejected"), _row("b", "2")]).drop_columns(["settings"])
    pq.write_table(old, tmp_path / "manifest.parquet")
    loaded = load_manifest(str(tmp_path), columns=["settings", "status", "path"])
    assert loaded.schema == pa.schema([MANIFEST_SCHEMA.field(n) for n in ("settings", "status", "path")])
    assert loaded.to_pylist() == [{"settings": None, "status": "rejected", "path": "a"},
                                  {"settings": None, "status": "ok", "path": "b"}]


def test_the_same_content_under_two_people_of_a_split_is_found():
    from faceproc.core.manifest import same_content_other_people

    rows = [dict(_row("t/ann/1", "x"), label="ann"), dict(_row("t/bob/9", "x"), label="bob"),  # a copy misfiled
            dict(_row("t/ann/2", "y"), label="ann"), dict(_row("t/ann/3", "y"), label="ann"),  # twice, same person
            dict(_row("v/cy/1", "z", split="val"), label="cy"), dict(_row("t/ann/4", "z"), label="ann"),  # leakage
            dict(_row("t/dee/1", "w", status="rejected"), label="dee"), dict(_row("t/eve/1", "w"), label="eve")]
    found = same_content_other_people(_manifest(rows))
    assert list(zip(found["path"].to_pylist(), found["label"].to_pylist())) == [("t/ann/1", "ann"), ("t/bob/9", "bob")]
