import dataclasses
import json
import os
import re

import pytest

from faceproc.config import (
    MAX_DRIVER_THREADS,
    RULES,
    Config,
    ConfigError,
    PreprocessConfig,
    absolute_paths,
    load_config,
    parse_override,
    validate,
)


def test_defaults_round_trip_through_json():
    config = Config()
    again = Config.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert config.preprocess.augment_copies == 0
    assert config.train.models == ["cnn", "resnet50", "resnet50_imagenet", "facenet"]


def test_toml_file_then_overrides(tmp_path):
    path = tmp_path / "faceproc.toml"
    path.write_text('output = "s3://bucket/out"\n[preprocess]\nface_margin = 0.25\n[train]\nepochs = 3\n')
    config = load_config(str(path), {"train.epochs": "7", "train.models": "cnn,facenet",
                                     "train.concurrent": "true", "train.gpus_per_worker": "none",
                                     "train.model_epochs": "cnn=3, resnet50=1"})
    assert config.output == "s3://bucket/out"
    assert config.preprocess.face_margin == 0.25
    assert config.train.epochs == 7
    assert config.train.models == ["cnn", "facenet"]
    assert config.train.concurrent is True
    assert config.train.gpus_per_worker is None
    assert config.train.model_epochs == {"cnn": 3, "resnet50": 1}


def test_yaml_file(tmp_path):
    path = tmp_path / "faceproc.yaml"
    path.write_text("preprocess:\n  detector_actors: 4\n")
    assert load_config(str(path)).preprocess.detector_actors == 4


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"preprocess.nope": "1"}, "unknown config key 'preprocess.nope'"),
        ({"preprocess.augment_copies": "two"}, "not a valid int"),
        ({"train.concurrent": "maybe"}, "not a valid bool"),
        ({"preprocess": "5"}, "config key 'preprocess' is a section: set one of its keys, such as preprocess."),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"preprocess.face_margin": "-0.5"}, "preprocess.face_margin -0.5 must be between 0 and 1"),
        ({"train.epochs": "-5"}, "train.epochs -5 must be at least 1"),
        ({"train.facenet_mode": "finetun"}, "train.facenet_mode 'finetun' must be one of frozen, finetune"),
        ({"train.models": "cnn,nosuchmodel"}, "train.models 'nosuchmodel' must be one of all, cnn"),
        ({"train.model_epochs": "facenett=3"}, "train.model_epochs names 'facenett'"),
        ({"train.model_epochs": "cnn=0"}, "train.model_epochs cnn=0 must be at least 1"),
        ({"identify.model": "nosuch"}, "identify.model 'nosuch' must be one of cnn"),
        ({"evaluate.unknown_far": "2"}, "evaluate.unknown_far 2.0 must be between 0 and 1"),
        ({"train.seed": "-1"}, "train.seed -1 must be between 0 and 4294967295"),  # numpy's seeds
        ({"preprocess.seed": str(2**32)}, "preprocess.seed 4294967296 must be between 0 and 4294967295"),
    ],
)
def test_values_a_run_cannot_use_fail_when_the_config_is_built(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, overrides)


def test_every_problem_is_named_at_once_and_defaults_pass():
    validate(Config())
    with pytest.raises(ConfigError, match="preprocess.face_size 8 .*; train.patience 0"):
        load_config(None, {"preprocess.face_size": "8", "train.patience": "0"})


def test_every_rule_names_a_config_key():
    for dotted in RULES:
        section, key = dotted.split(".")
        assert key in {f.name for f in dataclasses.fields(getattr(Config(), section))}, dotted


@pytest.mark.parametrize("name, text, kind", [("c.toml", "[preprocess\n", "TOML"),
                                              ("c.yaml", "preprocess: [1,\n", "YAML")])
def test_a_malformed_file_is_a_config_error_naming_the_file(tmp_path, name, text, kind):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config file {re.escape(str(path))} is not valid {kind}: .*line"):
        load_config(str(path))


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[preprocess]\nmargin = 3\n")
    with pytest.raises(ConfigError, match="preprocess.margin"):
        load_config(str(path))


def test_parse_override():
    assert parse_override("a.b = 3") == ("a.b", "3")
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_absolute_paths_resolves_every_local_path_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "facenet_keras.h5").write_bytes(b"x")
    config = load_config(None, {"input": "photos", "output": "s3://bucket/out", "models_dir": "weights",
                                "train.imagenet_weights": "~/resnet.h5"})
    resolved = absolute_paths(config)
    assert resolved.input == str(tmp_path / "photos")
    assert resolved.output == "s3://bucket/out"  # URIs pass through
    assert resolved.data_dir == str(tmp_path / "data")
    assert resolved.models_dir == str(tmp_path / "weights")
    assert resolved.train.imagenet_weights == os.path.expanduser("~/resnet.h5")
    # the default models/facenet_keras.h5 does not exist here: the one in models_dir does
    assert resolved.train.facenet_weights == str(tmp_path / "weights" / "facenet_keras.h5")
    assert config.input == "photos"  # a copy: the caller's config is unchanged


def test_absolute_paths_keeps_a_named_facenet_file_even_when_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = absolute_paths(load_config(None, {"train.facenet_weights": "mine/facenet.h5"}))
    assert resolved.train.facenet_weights == str(tmp_path / "mine" / "facenet.h5")  # its error names this path
    assert resolved.train.imagenet_weights is None


@pytest.mark.parametrize("driver_max_photos, actors, limit", [(256, 2, 256), (256, 1, 256), (256, 8, 64),
                                                              (256, 3, 170), (0, 2, 0)])
def test_a_bigger_detector_pool_takes_fewer_photos_from_the_driver(driver_max_photos, actors, limit):
    prep = PreprocessConfig(driver_max_photos=driver_max_photos, detector_actors=actors)
    assert prep.driver_photo_limit == limit


def test_the_driver_detects_with_a_thread_per_core_unless_told():
    assert PreprocessConfig(driver_threads=3).driver_thread_count == 3
    default = PreprocessConfig().driver_thread_count
    assert 1 <= default <= min(MAX_DRIVER_THREADS, os.cpu_count())
