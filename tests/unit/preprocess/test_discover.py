import pytest

from faceproc.preprocess.discover import discover


def test_layout_hidden_files_and_misplaced_files(tmp_path):
    for rel in ["train/ann/1.jpg", "train/ann/2.png", "val/bob/1.jpg", "train/.DS_Store",
                "train/ann/.hidden.jpg", "__MACOSX/train/ann/._1.jpg", "val/bob/Thumbs.db",
                "stray.jpg", "train/ann/deep/3.jpg"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = discover(str(tmp_path))
    assert found.skipped == 4
    good = [(f.split, f.label) for f in found.files if not f.layout_error]
    assert good == [("train", "ann"), ("train", "ann"), ("val", "bob")]
    bad = sorted(f.path.rsplit("/", 1)[1] for f in found.files if f.layout_error)
    assert bad == ["3.jpg", "stray.jpg"]
    assert found.labels == ["ann", "bob"]


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover(str(tmp_path / "nope"))
