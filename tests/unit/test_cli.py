"""The command line refuses what it cannot run in one line, exit status 2, before it locks, creates or
loads anything."""

import pytest

from faceproc.cli import main
from tests.conftest import run_bound_by_permissions


def _refused(capsys, argv: list[str]) -> str:
    code = main(argv)
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("faceproc: error: ") and "\n" not in error, error
    return error


@pytest.mark.parametrize("command", [["run", "--input", "{photos}"], ["preprocess", "--input", "{photos}"],
                                     ["identify", "--input", "{photos}"], ["evaluate"], ["predict", "{photos}/a.jpg"]])
def test_an_output_that_is_a_file(tmp_path, capsys, command):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    argv = [part.format(photos=tmp_path / "photos") for part in command]
    assert f"output {out} is a file, not a folder" in _refused(capsys, [argv[0], "--output", str(out), *argv[1:]])
    assert out.read_text() == "not a folder"


@pytest.mark.parametrize("command", ["run", "preprocess", "identify"])
def test_a_missing_input_creates_no_output(tmp_path, capsys, command):
    out = tmp_path / "out"
    error = _refused(capsys, [command, "--input", str(tmp_path / "nowhere"), "--output", str(out)])
    assert "nowhere does not exist" in error and not out.exists()


def test_an_unknown_model_stops_run_before_preprocessing(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    out = tmp_path / "out"
    error = _refused(capsys, ["run", "--input", str(tmp_path / "photos"), "--output", str(out),
                              "--models", "cnn,nosuchmodel"])
    assert "train.models 'nosuchmodel' must be one of all, cnn" in error and not out.exists()


@pytest.mark.parametrize("command", ["run", "preprocess", "identify"])
def test_a_ray_address_nothing_answers_at_creates_no_output(tmp_path, capsys, monkeypatch, command):
    from tests.conftest import closed_port

    address = f"127.0.0.1:{closed_port()}"
    (tmp_path / "photos").mkdir()
    out = tmp_path / "out"
    monkeypatch.setenv("RAY_ADDRESS", address)  # as `--ray-address` would
    error = _refused(capsys, [command, "--input", str(tmp_path / "photos"), "--output", str(out)])
    assert f"no Ray cluster answers at {address}" in error and not out.exists()


def test_a_malformed_config_file(tmp_path, capsys):
    config = tmp_path / "faceproc.toml"
    config.write_text("[preprocess\nface_margin = 0.2\n")
    error = _refused(capsys, ["train", "--output", str(tmp_path / "out"), "--config", str(config)])
    assert f"config file {config} is not valid TOML" in error and not (tmp_path / "out").exists()


def test_predict_names_missing_images_before_loading_a_model(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    error = _refused(capsys, ["predict", "--output", str(tmp_path / "out"), str(tmp_path / "gone.jpg")])
    assert f"not an image file (missing, or a folder): {tmp_path / 'gone.jpg'}" in error


def test_identify_without_a_trained_model_creates_nothing(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    code = main(["identify", "--input", str(tmp_path / "photos"), "--output", str(out), "--model", "cnn"])
    error = capsys.readouterr().err
    assert code != 0 and f"faceproc train --output {out} --models cnn" in error
    assert not (out / "identities").exists()


@pytest.mark.parametrize("command", [["train"], ["evaluate"], ["identify", "--input", "{photos}"],
                                     ["predict", "{photos}/a.jpg"]])
def test_commands_that_read_an_output_refuse_one_that_does_not_exist(tmp_path, capsys, command):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    out = tmp_path / "never"
    argv = [part.format(photos=tmp_path / "photos") for part in command]
    error = _refused(capsys, [argv[0], "--output", str(out), *argv[1:]])
    assert f"output folder {out} does not exist" in error and not out.exists()


@pytest.mark.parametrize("command", ["run", "preprocess", "identify"])
def test_an_output_inside_the_input_is_refused(tmp_path, capsys, command):
    (tmp_path / "photos" / "train").mkdir(parents=True)
    out = tmp_path / "photos" / "train" / "out"
    error = _refused(capsys, [command, "--input", f"file://{tmp_path / 'photos'}", "--output", str(out)])
    assert f"output {out} is inside the input folder {tmp_path / 'photos'}" in error and not out.exists()



def test_an_output_inside_the_default_dataset_is_refused_too(tmp_path, capsys, monkeypatch):
    """`run` without --input fetches the default dataset when it is missing; inside it is no place for OUT."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "data" / "5-celebrity-faces-dataset" / "out"
    error = _refused(capsys, ["run", "--output", str(out)])
    assert f"output {out} is inside the input folder {out.parent}" in error and not (tmp_path / "data").exists()

@pytest.mark.parametrize("argv, verbose", [(["train", "--output", "o"], False),
                                           (["-v", "train", "--output", "o"], True),
                                           (["train", "--output", "o", "-v"], True)])
def test_verbose_before_or_after_the_command(argv, verbose):
    from faceproc.cli import build_parser

    assert build_parser().parse_args(argv).verbose is verbose


def test_local_paths_are_checked_as_paths_or_file_uris(tmp_path):
    from faceproc.cli import _require_input
    from faceproc.config import Config

    (tmp_path / "photos").mkdir()
    for given in (str(tmp_path / "photos"), f"file://{tmp_path / 'photos'}", "s3://bucket/photos"):
        _require_input(Config(input=given, output=str(tmp_path / "out")))  # object storage: listed by the stage
    for missing in (str(tmp_path / "nowhere"), f"file://{tmp_path / 'nowhere'}"):
        with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
            _require_input(Config(input=missing))


def test_a_file_uri_names_the_same_local_tree_as_its_path(tmp_path):
    from faceproc.config import Config, absolute_paths, file_uri_to_path

    assert file_uri_to_path("file:///photos/my%20trip/d%C3%ADa%232") == "/photos/my trip/día#2"
    assert file_uri_to_path("s3://bucket/my%20trip") == "s3://bucket/my%20trip"
    config = absolute_paths(Config(input=f"file://{tmp_path}/my%20photos", output=f"file://{tmp_path}/out"))
    assert (config.input, config.output) == (f"{tmp_path}/my photos", f"{tmp_path}/out")


def test_run_on_the_default_dataset_is_not_refused_when_it_is_still_to_be_fetched(tmp_path, monkeypatch):
    from faceproc.config import Config, absolute_paths
    from faceproc.pipeline import fetches_the_dataset

    monkeypatch.chdir(tmp_path)  # a fresh clone: no data/ yet
    assert fetches_the_dataset(absolute_paths(Config()))
    assert not fetches_the_dataset(absolute_paths(Config(input="photos")))


def test_a_job_fetches_the_dataset_onto_shared_storage_but_not_into_its_working_dir_copy(tmp_path, monkeypatch):
    import json

    from faceproc.cli import _require_fetch_outside_job_copy
    from faceproc.config import Config, ConfigError, absolute_paths

    job_copy, shared = tmp_path / "job_copy", tmp_path / "shared"
    job_copy.mkdir()
    monkeypatch.chdir(job_copy)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://x.zip"}}))
    _require_fetch_outside_job_copy(absolute_paths(Config(data_dir=str(shared),
                                                          input=str(shared / "5-celebrity-faces-dataset"))))
    with pytest.raises(ConfigError, match="would put it in this job's copy of its working_dir"):
        _require_fetch_outside_job_copy(absolute_paths(Config()))  # data/ relative to the job's copy
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    _require_fetch_outside_job_copy(absolute_paths(Config()))  # not a job: data/ in the working folder is fine


def test_the_saved_config_names_the_cluster_that_ray_address_chose(tmp_path, monkeypatch):
    """`ray job submit` sets $RAY_ADDRESS: the config saved beside the outputs records it, unless the
    command line or the config file named a cluster, which is what init_ray joins then."""
    from faceproc.cli import _config, build_parser

    (tmp_path / "photos").mkdir()
    argv = ["preprocess", "--input", str(tmp_path / "photos"), "--output", str(tmp_path / "out")]
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert _config(build_parser().parse_args(argv)).ray_address is None
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert _config(build_parser().parse_args(argv)).ray_address == "auto"
    assert _config(build_parser().parse_args([*argv, "--ray-address", "local"])).ray_address == "local"
    config_file = tmp_path / "faceproc.toml"
    config_file.write_text('ray_address = "local"\n')
    assert _config(build_parser().parse_args([*argv, "--config", str(config_file)])).ray_address == "local"


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_train_and_evaluate_save_the_preprocessing_their_rows_were_made_with(tmp_path, capsys, command):
    """They read face rows without making them: the config they save takes the row settings of OUT's
    live rows (their settings record), and a different one the user sets is refused, not recorded."""
    import json

    import pyarrow as pa

    from faceproc.cli import _adopt_rows_preprocessing, _config, build_parser
    from faceproc.config import PreprocessConfig
    from faceproc.core import layout, storage
    from faceproc.core.schema import MANIFEST_SCHEMA
    from faceproc.preprocess.settings import fingerprint, row_settings

    out = tmp_path / "out"
    out.mkdir()
    settings = row_settings(PreprocessConfig(face_margin=0.2, align=False))
    (out / "settings").mkdir()
    (out / "settings" / f"{fingerprint(settings)}.json").write_text(json.dumps(settings))
    rows = [{"path": f"/p/{split}/a/1.jpg", "sha256": split, "split": split, "label": "a", "status": "ok",
             "face_rows": 1, "leakage": False, "run_id": "r1", "settings": fingerprint(settings)}
            for split in ("train", "val")]
    storage.write_table_atomic(layout.manifest(str(out)), pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA))

    shared = tmp_path / "shared.toml"  # a config file every command reads: its other settings are kept
    shared.write_text("[preprocess]\ndetector_actors = 3\n")
    args = build_parser().parse_args([command, "--output", str(out), "--config", str(shared)])
    config = _config(args, output=args.output)
    _adopt_rows_preprocessing(config, args)
    assert (config.preprocess.face_margin, config.preprocess.align) == (0.2, False)  # the rows' values
    assert config.preprocess.detector_actors == 3  # not a row setting: as given

    error = _refused(capsys, [command, "--output", str(out), "--set", "preprocess.face_margin=0.3"])
    assert f"preprocess.face_margin=0.3 is not applied by `faceproc {command}`" in error and "made with 0.2" in error
    config_file = tmp_path / "faceproc.toml"
    config_file.write_text("[preprocess]\nalign = true\n")
    assert "preprocess.align=true is not applied" in _refused(capsys, [command, "--output", str(out),
                                                                      "--config", str(config_file)])
    config_file.write_text("[preprocess]\nface_margin = 0.2\n")  # the same as the rows: nothing to refuse
    args = build_parser().parse_args([command, "--output", str(out), "--config", str(config_file)])
    _adopt_rows_preprocessing(_config(args, output=args.output), args)


def test_evaluate_saves_the_unknown_threshold_settings_facenet_trained_with(tmp_path, capsys):
    """The threshold is chosen when facenet trains; evaluate only reports it, so it takes that
    training's values and refuses others the user sets, which it could not apply."""
    import json

    from faceproc.config import Config
    from faceproc.evaluate.run import adopt_trained_unknown_settings

    facenet = tmp_path / "out" / "models" / "facenet"
    facenet.mkdir(parents=True)
    (facenet / "result.json").write_text(json.dumps({"status": "ok", "inputs": {"unknown": [0.05, 0.9]}}))
    config = Config(output=str(tmp_path / "out"))
    adopt_trained_unknown_settings(config)
    assert (config.evaluate.unknown_far, config.evaluate.unknown_quantile) == (0.01, 0.99)  # no threshold: as set
    (facenet / "centroids.json").write_text("{}")
    adopt_trained_unknown_settings(config)
    assert (config.evaluate.unknown_far, config.evaluate.unknown_quantile) == (0.05, 0.9)

    error = _refused(capsys, ["evaluate", "--output", str(tmp_path / "out"), "--set", "evaluate.unknown_far=0.01"])
    assert "evaluate.unknown_far=0.01 is not applied by `faceproc evaluate`" in error and "chosen with 0.05" in error
    adopt_trained_unknown_settings(config, {"evaluate.unknown_far"})  # the same value: nothing to refuse


@pytest.mark.parametrize(("option", "what"), [("--data-dir", "the dataset's folder"),
                                              ("--models-dir", "the FaceNet weights' folder")])
def test_fetch_data_refuses_a_folder_it_cannot_make_before_downloading(tmp_path, capsys, option, what):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    folders = {"--data-dir": str(tmp_path / "data"), "--models-dir": str(tmp_path / "models"),
               option: str(in_the_way / "below")}
    error = _refused(capsys, ["fetch-data", *(part for item in folders.items() for part in item)])
    assert f"{what} {in_the_way / 'below'} cannot be made: a file is in the way ({in_the_way})" in error
    assert not (tmp_path / "data" / "5-celebrity-faces-dataset").exists()  # nothing fetched, nothing half-done



def test_fetch_data_leaves_a_dataset_folder_without_its_splits_alone(tmp_path, capsys):
    """Such a folder is a user's own (a fetch renames the whole tree into place): never replaced."""
    partial = tmp_path / "data" / "5-celebrity-faces-dataset"
    (partial / "train" / "ann").mkdir(parents=True)
    (partial / "train" / "ann" / "1.jpg").write_bytes(b"mine")
    error = _refused(capsys, ["fetch-data", "--data-dir", str(tmp_path / "data"), "--models-dir",
                              str(tmp_path / "models")])
    assert f"{partial} is there but holds no val folder: move it away" in error
    assert (partial / "train" / "ann" / "1.jpg").read_bytes() == b"mine" and not (tmp_path / "models").exists()


def test_fetch_data_refuses_a_folder_it_cannot_write_in_before_downloading(tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    done = run_bound_by_permissions(["-m", "faceproc.cli", "fetch-data", "--data-dir", str(read_only / "data"), "--models-dir",
                                     str(tmp_path / "models")])
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.strip() == (f"faceproc: error: the dataset's folder {read_only / 'data'} cannot be made: "
                                   f"{read_only} is not writable")
    assert not (tmp_path / "models").exists()


def test_a_folder_of_the_input_that_cannot_be_listed_stops_the_run_in_one_line(tmp_path):
    """Its photos are neither processed nor taken for deleted: nothing is published."""
    (tmp_path / "photos" / "train" / "ann").mkdir(parents=True)
    (tmp_path / "photos" / "train" / "ann" / "1.jpg").write_bytes(b"x")
    (tmp_path / "photos" / "train" / "bob").mkdir(mode=0o000)
    out = tmp_path / "out"
    done = run_bound_by_permissions(["-m", "faceproc.cli", "preprocess", "--input", str(tmp_path / "photos"),
                                     "--output", str(out)])
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.strip() == (f"faceproc: error: cannot list {tmp_path / 'photos' / 'train' / 'bob'} in the input "
                                   "(Permission denied): nothing was processed; make it readable, or move it out "
                                   "of the input")
    assert not (out / "manifest.parquet").exists()

def test_a_negative_wait_is_refused(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    error = _refused(capsys, ["preprocess", "--input", str(tmp_path / "photos"), "--output", str(tmp_path / "out"),
                              "--wait", "-5"])
    assert "--wait -5 must be at least 0" in error and not (tmp_path / "out").exists()


@pytest.mark.parametrize("uri, reason", [
    ("foo://bar/photos", "Unrecognized filesystem type in URI: foo://bar/photos"),
    ("s3://bucket/photos?endpoint_override=127.0.0.1:{port}&scheme=http", "Could not connect to server"),
])
def test_an_input_uri_that_cannot_be_used_is_refused_before_the_output_is_made(tmp_path, capsys, uri, reason):
    from tests.conftest import closed_port

    uri = uri.format(port=closed_port())
    error = _refused(capsys, ["preprocess", "--input", uri, "--output", str(tmp_path / "out")])
    assert error.startswith(f"faceproc: error: input {uri} cannot be used: ") and reason in error
    assert not (tmp_path / "out").exists()


def test_a_training_whose_every_model_was_skipped_exits_1(tmp_path, capsys):
    """A scheduled job that trained nothing (no weights where it looked) must not report success."""
    from tests.conftest import write_face_shards

    write_face_shards(tmp_path / "out", {"ann": [(200, 40, 40)] * 3, "bob": [(40, 40, 200)] * 3}, copies=1)
    code = main(["train", "--output", str(tmp_path / "out"), "--models", "facenet",
                 "--set", f"train.facenet_weights={tmp_path / 'missing.h5'}"])
    captured = capsys.readouterr()
    assert code == 1 and "facenet" in captured.out and "skipped" in captured.out
    assert captured.err.strip().endswith("every model asked for was skipped, so nothing can name a face (the "
                                         "reasons are above)")


@pytest.mark.parametrize(("command", "key", "who"), [
    (["evaluate"], "train.epochs=3", "`faceproc train` or `faceproc run`"),
    (["evaluate"], "preprocess.detector_actors=1", "`faceproc preprocess` or `faceproc run`"),
    (["train"], "identify.model=cnn", "`faceproc identify`"),
    (["train"], "evaluate.batch_size=8", "`faceproc evaluate` or `faceproc run`"),
    (["run"], "identify.model=cnn", "`faceproc identify`"),
    (["preprocess", "--input", "{photos}"], "train.seed=1", "`faceproc train` or `faceproc run`"),
    (["identify", "--input", "{photos}"], "evaluate.unknown_far=0.05",
     "`faceproc train` or `faceproc run` (facenet's unknown threshold is chosen as it trains)"),
    (["predict", "{photos}/a.jpg"], "identify.into=/tmp/ids", "`faceproc identify`"),
    (["evaluate"], "models_dir=/tmp/models", "`faceproc train` or `faceproc run`"),
])
def test_a_setting_the_command_never_reads_is_refused_naming_who_applies_it(tmp_path, capsys, command, key, who):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    out = tmp_path / "out"
    argv = [part.format(photos=tmp_path / "photos") for part in command]
    error = _refused(capsys, [argv[0], "--output", str(out), *argv[1:], "--set", key])
    key = key.split("=")[0]
    assert f"--set {key} is not read by `faceproc {argv[0]}`, so it would do nothing" in error
    assert error.endswith(f"{who} applies it") and not out.exists()


def test_settings_the_command_reads_are_not_refused(tmp_path):
    """train chooses facenet's unknown threshold, so evaluate.unknown_far is its setting too; train and
    evaluate take the row settings (refused only when they differ from the rows', elsewhere)."""
    from faceproc.cli import _refuse_unread_settings

    _refuse_unread_settings("train", {"evaluate.unknown_far": "0.05", "train.epochs": "3",
                                      "preprocess.face_margin": "0.1", "models_dir": "m"})
    _refuse_unread_settings("evaluate", {"evaluate.batch_size": "8", "preprocess.align": "true"})
    _refuse_unread_settings("run", {"evaluate.batch_size": "8", "preprocess.detector_actors": "4", "input": "x"})
    _refuse_unread_settings("identify", {"identify.model": "cnn", "preprocess.detector_actors": "4"})
    _refuse_unread_settings("predict", {"identify.model": "cnn", "preprocess.face_margin": "0.1"})
