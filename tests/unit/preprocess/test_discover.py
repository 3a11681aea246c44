import pytest

from faceproc.preprocess.discover import discover
from tests.conftest import run_bound_by_permissions


def test_layout_hidden_files_and_misplaced_files(tmp_path):
    for rel in ["train/ann/1.jpg", "train/ann/2.png", "val/bob/1.jpg", "train/.DS_Store",
                "train/ann/.hidden.jpg", "__MACOSX/train/ann/._1.jpg", "val/bob/Thumbs.db",
                "stray.jpg", "train/ann/deep/3.jpg"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = discover(str(tmp_path))
    assert found.skipped == 4
    files = found.files.to_pylist()
    good = [(f["split"], f["label"]) for f in files if not f["layout_error"]]
    assert good == [("train", "ann"), ("train", "ann"), ("val", "bob")]
    bad = {f["path"].rsplit("/", 1)[1]: f["layout_error"] for f in files if f["layout_error"]}
    assert sorted(bad) == ["3.jpg", "stray.jpg"]
    assert "'train/ann/deep/3.jpg'" in bad["3.jpg"]
    assert [f["path"] for f in files] == sorted(f["path"] for f in files)
    assert all(f["size"] == 1 and f["mtime_ns"] for f in files)
    assert found.labels == ["ann", "bob"]
    assert found.unused_splits == {}


def test_split_folders_that_nothing_reads_are_counted(tmp_path):
    for rel in ["train/ann/1.jpg", "Train/ann/2.jpg", "test/bob/1.jpg", "test/bob/2.jpg", "val/bob/3.jpg"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert discover(str(tmp_path)).unused_splits == {"Train": 1, "test": 2}


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover(str(tmp_path / "nope"))


def test_identify_s_listing_also_stops_at_a_folder_it_cannot_list(tmp_path):
    (tmp_path / "inbox" / "2024" / "trip").mkdir(parents=True)
    (tmp_path / "inbox" / "2024" / "trip").chmod(0o000)
    script = ("from faceproc.preprocess.discover import UnlistableFolder, list_photos\n"
              "try:\n"
              f"    list_photos({str(tmp_path / 'inbox')!r})\n"
              "except UnlistableFolder as exc:\n"
              "    print(exc)\n")
    done = run_bound_by_permissions(["-c", script])
    assert done.stdout.startswith(f"cannot list {tmp_path / 'inbox' / '2024' / 'trip'} in the input (Permission "
                                  "denied)"), done.stderr
