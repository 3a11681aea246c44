"""`faceproc run`'s fetch stage: the default input is fetched when missing, whatever the working directory."""

import pytest

from faceproc.config import Config, absolute_paths
from faceproc.pipeline import _fetch_if_needed
from tests.conftest import FACENET_WEIGHTS


def _default_config_in(folder, monkeypatch) -> Config:
    """The config `faceproc run` builds with no options, started from `folder` (paths made absolute)."""
    monkeypatch.chdir(folder)
    return absolute_paths(Config())


def test_the_default_input_made_absolute_is_recognised_as_the_fetched_dataset(tmp_path, monkeypatch):
    for split in ("train", "val"):
        (tmp_path / "data" / "5-celebrity-faces-dataset" / split).mkdir(parents=True)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "facenet_keras.h5").symlink_to(FACENET_WEIGHTS)  # the pinned file: checked, not fetched
    assert _fetch_if_needed(_default_config_in(tmp_path, monkeypatch)) == "dataset and FaceNet weights present"


def test_another_input_is_used_as_it_is(tmp_path, monkeypatch):
    config = _default_config_in(tmp_path, monkeypatch)
    config.input = str(tmp_path / "photos")
    assert _fetch_if_needed(config) == f"using {tmp_path / 'photos'}"
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_a_fresh_checkout_fetches_the_dataset_and_weights(tmp_path, monkeypatch):
    config = _default_config_in(tmp_path, monkeypatch)
    assert _fetch_if_needed(config) == "downloaded the dataset and FaceNet weights"
    assert len(list((tmp_path / "data" / "5-celebrity-faces-dataset" / "val").glob("*/*"))) == 25
    assert (tmp_path / "models" / "facenet_keras.h5").is_file()


REPORTED = [{"model": "cnn", "status": "ok"}, {"model": "resnet50_imagenet", "status": "skipped"}]


@pytest.mark.parametrize(("force", "changed", "training", "reported", "why"), [
    (True, 0, [], REPORTED, "forced"),
    (False, 3, [], REPORTED, "photos changed"),
    (False, 0, [{"model": "cnn", "status": "ok"}], REPORTED, "models retrained"),
    (False, 0, [{"model": "cnn", "status": "ok", "up_to_date": True}], None, "no report yet"),
    # a first skip (or failure) is news to the report; a skip held from an earlier run is not
    (False, 0, [{"model": "facenet", "status": "skipped"}], REPORTED, "not in the report yet: facenet skipped"),
    (False, 0, [{"model": "cnn", "status": "failed"}], REPORTED, "not in the report yet: cnn failed"),
    (False, 0, [{"model": "resnet50_imagenet", "status": "skipped", "up_to_date": True}], REPORTED, None),
    (False, 0, [{"model": "resnet50_imagenet", "status": "skipped"}], REPORTED, None),  # retried, skipped again
    (False, 0, [{"model": "facenet", "status": "ok", "up_to_date": True}], REPORTED,  # trained by `faceproc train`
     "not in the report yet: facenet ok"),
])
def test_run_evaluates_when_the_report_would_not_show_this_runs_training(force, changed, training, reported, why):
    from faceproc.pipeline import evaluation_reason

    assert evaluation_reason(force, changed, training, reported) == why
