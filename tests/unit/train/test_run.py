"""Training with Ray Train on real (small) shards: no mocks of Ray, TensorFlow or Parquet."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from faceproc.cli import main
from faceproc.config import Config, TrainConfig
from faceproc.inference.artifact import ModelArtifact
from faceproc.train.placement import plan_placement
from faceproc.train.run import run_train
from tests.conftest import run_in_fresh_process, write_face_shards

pytestmark = pytest.mark.usefixtures("ray_session")

COLOURS = {"red": [(200, 40, 40), (220, 60, 50), (180, 30, 60), (210, 50, 30)],
           "blue": [(40, 40, 200), (50, 70, 220), (30, 60, 180), (60, 40, 210)]}


def _config(out: Path, **train) -> Config:
    config = Config(output=str(out))
    for key, value in train.items():
        setattr(config.train, key, value)
    return config


def test_two_worker_cnn_gives_a_loadable_model_and_history(tmp_path, caplog):
    out = tmp_path / "out"
    write_face_shards(out, COLOURS)
    killed = out / "_ray_train" / "cnn-1700000000" / "checkpoint_x"  # what a killed run leaves
    killed.mkdir(parents=True)
    (killed / "model.weights.npz").write_bytes(b"weights")
    (result,) = run_train(_config(out, models=["cnn"], epochs=2, workers=2, holdout_fraction=0.25))
    assert result["status"] == "ok", result["reason"]
    assert (result["workers"], result["device"], result["epochs_run"]) == (2, "cpu", 2)
    assert not list((out / "_ray_train").iterdir())  # checkpoints serve one fit: none kept, none left over
    model_dir = out / "models" / "cnn"
    assert [p.name for p in (out / "models").iterdir()] == ["cnn"]  # staged, then swapped in whole
    history = json.loads((model_dir / "history.json").read_text())
    assert history["epoch"] == [0, 1] and len(history["holdout_loss"]) == 2
    assert all(np.isfinite(history["loss"]))
    assert json.loads((model_dir / "classes.json").read_text()) == ["blue", "red"]
    assert json.loads((model_dir / "config.json").read_text())["train"]["epochs"] == 2

    import faceproc.models.layers  # noqa: F401  (registers faceproc's layers)
    from faceproc.models.keras_env import keras

    model = keras.models.load_model(model_dir / "model.keras")
    probabilities = model.predict(np.full((2, 160, 160, 3), 128, np.float32), verbose=0)
    assert probabilities.shape == (2, 2) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)

    # same photos and settings: kept as is; --force (or new settings) retrains
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="faceproc"):
        (again,) = run_train(_config(out, models=["cnn"], epochs=2, workers=2, holdout_fraction=0.25))
    assert again.get("up_to_date") is True and again["train_seconds"] == result["train_seconds"]
    assert not [r for r in caplog.records if r.getMessage().startswith("training ")]  # nothing is said to train
    assert result["trained_because"] == "no usable model yet"
    (longer,) = run_train(_config(out, models=["cnn"], epochs=3, workers=1, holdout_fraction=0.25))
    assert longer["trained_because"] == "recipe.epochs 2 -> 3"  # the worker count is not a reason


@pytest.mark.parametrize("workers", [1, None], ids=["worker", "driver"])  # None: a small split trains in the driver
def test_a_small_change_fine_tunes_the_current_model_and_a_new_person_starts_over(tmp_path, workers):
    out = tmp_path / "out"
    write_face_shards(out, COLOURS, copies=1)
    settings = dict(models=["cnn"], epochs=3, workers=workers, holdout_fraction=0.25, warm_start_epochs=4)
    history = out / "models" / "cnn" / "history.json"
    (first,) = run_train(_config(out, **settings))
    assert (first["status"], first["start"]) == ("ok", "scratch"), first["reason"]
    scratch_losses = json.loads(history.read_text())["loss"]
    scratch_weights = ModelArtifact(str(out), "cnn").load(open_set=False).model.get_weights()

    write_face_shards(out, {"red": [(190, 50, 50)]}, run_id="20260102T000000Z-test01", copies=1, first=4)
    (warm,) = run_train(_config(out, **settings))
    warm_weights = ModelArtifact(str(out), "cnn").load(open_set=False).model.get_weights()
    assert [w.shape for w in warm_weights] == [w.shape for w in scratch_weights]
    # the fine-tuned weights when an epoch beat the current model's holdout loss, else the current ones,
    # which result.json goes on describing (the fine-tuning tried is kept apart)
    kept = "so its weights are kept" in warm["start_reason"]
    tried = warm["fine_tuning_tried"] if kept else warm
    assert tried["best_holdout_loss"] <= warm["start_holdout_loss"] and (
        tried["best_holdout_loss"] < warm["start_holdout_loss"]) is not kept
    assert all(np.array_equal(a, b) for a, b in zip(warm_weights, scratch_weights)) is kept
    # 1 of 9 photos changed (11%) against warm_start_max_change's 20%: 4 epochs x 0.11 / 0.2 -> 3 of the 4
    assert (warm["status"], warm["start"], tried["epochs_run"], tried["epochs"]) == ("ok", "warm", 3, 3), warm
    if kept:
        assert {key: warm[key] for key in ("best_epoch", "epochs_run", "learning_rate")} == \
            {key: first[key] for key in ("best_epoch", "epochs_run", "learning_rate")}
    assert warm["in_driver"] is (workers is None)  # the driver fine-tunes the loaded model, a worker a copy
    assert "1 train photo added, 0 removed and 0 changed (11% of the 9 live ones" in warm["start_reason"]
    assert (warm["model_version"] == first["model_version"]) is kept  # new weights: identify re-identifies
    # history.json: the training's epochs, then the fine-tuning's that started from its weights (kept: unchanged)
    losses = json.loads(history.read_text())["loss"]
    assert losses[:len(scratch_losses)] == scratch_losses
    assert len(losses) == len(scratch_losses) + (0 if kept else 3)
    if not kept:
        assert losses[len(scratch_losses)] < scratch_losses[0] and warm["base_epochs"] == len(scratch_losses)
        assert warm["best_epoch"] >= len(scratch_losses)  # an index into the whole history
    import pyarrow.parquet as pq

    assert pq.read_table(out / "models" / "cnn" / "trained_photos.parquet").num_rows == 8  # the base is kept

    write_face_shards(out, {"green": [(40, 200, 40), (60, 220, 50)]}, run_id="20260103T000000Z-test02", copies=1)
    (scratch,) = run_train(_config(out, **settings))
    assert (scratch["start"], scratch["epochs_run"]) == ("scratch", 3)
    assert "+green" in scratch["start_reason"]
    assert pq.read_table(out / "models" / "cnn" / "trained_photos.parquet").num_rows == 11


def test_retrain_reason_names_what_changed():
    from faceproc.train.run import retrain_reason

    inputs = {"data": "photos-1", "recipe": {"epochs": 45, "image_size": 32}, "seed": 0}
    saved = {"status": "ok", "inputs": inputs}
    assert retrain_reason(saved, inputs, force=True) == "forced (--force)"
    assert retrain_reason(None, inputs, force=False) == "no usable model yet"
    assert retrain_reason({"status": "failed"}, inputs, force=False) == "no usable model yet"
    assert "earlier faceproc" in retrain_reason({"status": "ok"}, inputs, force=False)
    changed = {**inputs, "data": "photos-2", "recipe": {"epochs": 60, "image_size": 32}, "seed": 1}
    assert retrain_reason(saved, changed, force=False) == (
        "the live train photos changed; recipe.epochs 45 -> 60; seed 0 -> 1")
    assert retrain_reason(saved, {**inputs, "data": "photos-2"}, False, "face_margin 0.1 -> 0.2") == (
        "preprocessing settings changed (face_margin 0.1 -> 0.2)")


def test_a_retraining_names_the_preprocessing_settings_its_rows_changed_by(tmp_path):
    from faceproc.config import PreprocessConfig
    from faceproc.preprocess.settings import fingerprint, row_settings
    from faceproc.train.run import row_settings_change

    records = {}
    for margin in (0.1, 0.2):
        settings = row_settings(PreprocessConfig(face_margin=margin))
        records[margin] = fingerprint(settings)
        (tmp_path / "settings").mkdir(exist_ok=True)
        (tmp_path / "settings" / f"{records[margin]}.json").write_text(json.dumps(settings))
    saved = {"status": "ok", "row_settings": [records[0.1]]}
    assert row_settings_change(str(tmp_path), saved, {records[0.2]}) == "face_margin 0.1 -> 0.2"
    assert row_settings_change(str(tmp_path), saved, {records[0.1]}) is None  # the same settings
    assert row_settings_change(str(tmp_path), {"status": "ok"}, {records[0.2]}) is None  # not recorded then


def test_imagenet_weights_unavailable_is_skipped_with_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEPROC_IMAGENET_WEIGHTS_URL", "http://127.0.0.1:9/resnet50_notop.h5")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    out = tmp_path / "out"
    write_face_shards(out, COLOURS)
    config = _config(out, models=["resnet50_imagenet"], epochs=1)
    config.models_dir = str(tmp_path / "models")
    (result,) = run_train(config)
    assert result["status"] == "skipped"
    assert not {"start", "in_driver", "trained_because"} & set(result)  # nothing was trained
    assert str(tmp_path / "models" / "resnet50_imagenet_notop.h5") in result["reason"]
    assert json.loads((out / "models" / "resnet50_imagenet" / "result.json").read_text())["status"] == "skipped"

    monkeypatch.setenv("FACEPROC_IMAGENET_WEIGHTS_URL", "http://127.0.0.1:9/moved.h5")  # a retry would name it
    (again,) = run_train(config)
    assert again["up_to_date"] and "moved.h5" not in again["reason"]  # the skip stands, nothing downloaded
    assert "start" not in again  # nothing was started
    config.train.seed = 1  # other settings (or photos): the weights are still not here, no new attempt
    (changed,) = run_train(config)
    assert changed["up_to_date"] and "moved.h5" not in changed["reason"]
    config.train.imagenet_weights = str(tmp_path / "typo.h5")  # another weights setting is tried at once
    (named,) = run_train(config)
    assert not named.get("up_to_date") and named["status"] == "skipped" and "typo.h5" in named["reason"]
    config.train.imagenet_weights = None
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "resnet50_imagenet_notop.h5").write_bytes(b"not weights")
    (retried,) = run_train(config)  # a weights file put in place is tried at once
    assert not retried.get("up_to_date") and retried["status"] == "failed"


def test_a_skip_beside_a_usable_model_is_held_and_the_model_stays_in_use(tmp_path, monkeypatch):
    """ImageNet weights that were here once and are gone: the model they gave stays in use, and its
    weights are not looked for again on every rerun."""
    from faceproc.models.keras_env import keras

    monkeypatch.setenv("FACEPROC_IMAGENET_WEIGHTS_URL", "http://127.0.0.1:9/resnet50_notop.h5")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    weights = tmp_path / "my_resnet50_notop.h5"  # random, written here: no internet
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(160, 160, 3)).save_weights(str(weights))
    out = tmp_path / "out"
    write_face_shards(out, COLOURS, copies=1)
    config = _config(out, models=["resnet50_imagenet"], epochs=1, imagenet_weights=str(weights))
    config.models_dir = str(tmp_path / "models")
    (first,) = run_train(config)
    assert first["status"] == "ok", first["reason"]

    weights.unlink()
    write_face_shards(out, {"green": [(40, 200, 40), (60, 220, 50)]}, run_id="20260102T000000Z-test01", copies=1)
    (attempt,) = run_train(config)  # a new person (no warm start) and the weights are gone
    assert attempt["status"] == "skipped" and not attempt.get("up_to_date")
    folder = out / "models" / "resnet50_imagenet"
    assert json.loads((folder / "last_attempt.json").read_text())["status"] == "skipped"
    assert ModelArtifact(str(out), "resnet50_imagenet").version() == first["model_version"]  # still in use

    write_face_shards(out, {"blue": [(40, 50, 190)]}, run_id="20260103T000000Z-test02", copies=1, first=4)
    (held,) = run_train(config)  # more photos, within the hour: no new attempt
    assert held["status"] == "skipped" and held["up_to_date"] is True
    assert held["finished_at_unix"] == attempt["finished_at_unix"]
    weights.write_bytes(b"not weights")  # a weights file put in place is tried at once
    (retried,) = run_train(config)
    assert retried["status"] == "failed" and not retried.get("up_to_date")


def test_corrupt_facenet_weights_fail_that_model_with_one_line(tmp_path):
    out = tmp_path / "out"
    write_face_shards(out, COLOURS)
    weights = tmp_path / "facenet_keras.h5"
    weights.write_bytes(os.urandom(4096))
    (result,) = run_train(_config(out, models=["facenet"], facenet_weights=str(weights)))
    assert result["status"] == "failed"
    assert "corrupt" in result["reason"] and "\n" not in result["reason"]


@pytest.mark.slow
def test_a_failed_retrain_leaves_the_model_in_use_and_described_by_its_own_files(tmp_path):
    from tests.conftest import FACENET_WEIGHTS

    out = tmp_path / "out"
    write_face_shards(out, COLOURS)
    (first,) = run_train(_config(out, models=["facenet"], epochs=2, facenet_weights=str(FACENET_WEIGHTS)))
    assert first["status"] == "ok", first["reason"]
    folder = out / "models" / "facenet"
    saved_config = (folder / "config.json").read_text()
    weights = tmp_path / "facenet_keras.h5"
    weights.write_bytes(os.urandom(4096))
    (failed,) = run_train(_config(out, models=["facenet"], epochs=2, facenet_weights=str(weights)))
    assert failed["status"] == "failed" and "corrupt" in failed["reason"]
    assert json.loads((folder / "result.json").read_text())["model_version"] == first["model_version"]
    assert (folder / "config.json").read_text() == saved_config  # still what produced model.keras
    assert json.loads((folder / "last_attempt.json").read_text())["status"] == "failed"
    ModelArtifact(str(out), "facenet").check_usable()
    (again,) = run_train(_config(out, models=["facenet"], epochs=2, facenet_weights=str(FACENET_WEIGHTS)))
    assert again.get("up_to_date") is True and again["model_version"] == first["model_version"]


@pytest.mark.parametrize("train, cpus, node_cpus, gpus, nodes, trainers, expected", [
    (TrainConfig(), 2, 2, 0, 1, 1, (1, False, 2.0, 0.0)),  # a laptop: one worker, the whole machine
    (TrainConfig(materialize=False), 2, 2, 0, 1, 1, (1, False, 1.0, 0.0)),  # a core left for decoding
    (TrainConfig(), 2, 2, 0, 1, 2, (1, False, 1.0, 0.0)),  # two models trained concurrently
    (TrainConfig(workers=2), 2, 2, 0, 1, 1, (2, False, 1.0, 0.0)),
    (TrainConfig(workers=2), 64, 8, 0, 8, 1, (2, False, 8.0, 0.0)),  # never more than one node has
    (TrainConfig(), 64, 8, 0, 8, 1, (8, False, 8.0, 0.0)),  # one per CPU node
    (TrainConfig(workers=16), 2, 2, 0, 1, 1, (16, False, 0.25, 0.0)),
    (TrainConfig(), 16, 8, 4, 3, 1, (4, True, 1.0, 1.0)),  # one per GPU
    (TrainConfig(), 16, 8, 4, 3, 2, (2, True, 1.0, 1.0)),  # the GPUs shared by two trainings
    (TrainConfig(workers=2), 16, 8, 4, 3, 1, (2, True, 1.0, 1.0)),
    (TrainConfig(workers=8), 16, 8, 4, 3, 1, (8, False, 2.0, 0.0)),  # fewer GPUs than workers
    (TrainConfig(workers=2, gpus_per_worker=0.5), 16, 8, 1, 2, 1, (2, True, 1.0, 0.5)),  # asked for
    (TrainConfig(workers=2, gpus_per_worker=0), 16, 8, 4, 3, 1, (2, False, 8.0, 0.0)),  # refused
])
def test_placement_shares_the_cluster_between_workers(train, cpus, node_cpus, gpus, nodes, trainers, expected):
    where = plan_placement(train, cpus, node_cpus, gpus, nodes, trainers)
    assert (where.workers, where.use_gpu, where.cpus_per_worker, where.gpus_per_worker) == expected


@pytest.mark.parametrize("train, gpus, nodes, trainers, rows, hosts, in_driver", [
    (TrainConfig(), 0, 1, 1, 500, 1, True),  # a laptop, a small split: no worker group to start
    (TrainConfig(), 0, 1, 1, 2001, 1, False),  # over train.driver_train_max_rows
    (TrainConfig(driver_train_max_rows=0), 0, 1, 1, 500, 1, False),  # always workers
    (TrainConfig(workers=1), 0, 1, 1, 500, 1, False),  # a worker asked for
    (TrainConfig(), 0, 1, 2, 500, 1, False),  # two models at once (one driver)
    (TrainConfig(), 0, 1, 1, 500, 2, False),  # a head without CPUs: the driver is not the CPU node
    (TrainConfig(), 0, 3, 1, 500, 3, False),  # one worker per node
    (TrainConfig(), 1, 1, 1, 500, 1, False),  # a GPU worker
    (TrainConfig(gpus_per_worker=0), 1, 1, 1, 500, 1, False),  # a CPU worker on a GPU node: the driver would see it
    (TrainConfig(), 0, 1, 1, None, 1, False),  # the split's size unknown
])
def test_a_small_split_on_one_node_trains_in_the_driver(train, gpus, nodes, trainers, rows, hosts, in_driver):
    assert plan_placement(train, 2, 2, gpus, nodes, trainers, rows, hosts).in_driver is in_driver


@pytest.mark.parametrize("argv, message", [
    (["--models", "cnn,vgg"], "train.models 'vgg' must be one of all, cnn, resnet50"),
    (["--models", "cnn"], "no train face shards under"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    code = main(["train", "--output", str(tmp_path / "empty"), *argv])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_killed_worker_resumes_from_its_last_checkpoint(tmp_path):
    """Kill a real Ray Train worker process after its first checkpoint; the run completes."""
    import psutil
    import ray

    out = tmp_path / "out"
    write_face_shards(out, COLOURS)
    checkpoints = out / "_ray_train"
    killed: list[int] = []

    def first_checkpoint_is_registered() -> bool:
        """Ray Train resumes from checkpoints its controller registered, not from any folder on disk."""
        for snapshot in checkpoints.glob("*/checkpoint_manager_snapshot.json"):
            try:
                if json.loads(snapshot.read_text()).get("latest_checkpoint_result"):
                    return True
            except ValueError:  # being written
                pass
        return False

    def kill_a_worker_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            if first_checkpoint_is_registered():
                for process in psutil.Process().children(recursive=True):  # this session's Ray only
                    try:
                        is_train_worker = "RayTrainWorker" in " ".join(process.cmdline())
                    except psutil.Error:  # a process that ended while we looked
                        continue
                    if is_train_worker:
                        os.kill(process.pid, signal.SIGKILL)
                        killed.append(process.pid)
                        return
            time.sleep(0.1)

    epochs = 5
    killer = threading.Thread(target=kill_a_worker_after_first_checkpoint, daemon=True)
    killer.start()
    (result,) = run_train(_config(out, models=["cnn"], epochs=epochs, workers=2, patience=epochs, max_failures=2))
    killer.join(timeout=5)
    assert killed, "no worker was killed"
    assert result["status"] == "ok", result["reason"]
    assert result["resumed_at_epochs"] and result["resumed_at_epochs"][0] >= 1
    history = json.loads((out / "models" / "cnn" / "history.json").read_text())
    assert history["epoch"] == list(range(epochs))  # no epoch repeated or lost across the restart
    assert ray.is_initialized()


def test_a_small_split_trains_and_evaluates_without_starting_ray(tmp_path):
    """A fresh process with no Ray address and no GPU (a laptop's `faceproc train` and `evaluate`)
    trains a split small enough for the driver, and predicts its validation faces, without starting
    Ray: no worker would take part, so Ray's start is all it would add."""
    out = tmp_path / "out"
    write_face_shards(out, COLOURS)
    write_face_shards(out, COLOURS, split="val", copies=1)
    script = (
        "import json, ray\n"
        "from faceproc.config import Config\n"
        "from faceproc.evaluate.run import run_evaluate\n"
        "from faceproc.train.run import run_train\n"
        f"config = Config(output={str(out)!r})\n"
        "config.train.models, config.train.epochs, config.train.holdout_fraction = ['cnn'], 2, 0.25\n"
        "(result,) = run_train(config)\n"
        "(row,) = run_evaluate(config)\n"
        "print(json.dumps({'status': result['status'], 'in_driver': result['in_driver'],\n"
        "                  'epochs': result['epochs_run'], 'n': row['n'], 'ray_started': ray.is_initialized()}))\n"
    )
    assert run_in_fresh_process(script) == {"status": "ok", "in_driver": True, "epochs": 2, "n": 8,
                                            "ray_started": False}
    assert ModelArtifact(str(out), "cnn").classes() == ["blue", "red"]


@pytest.mark.parametrize("address, rows, free", [
    (None, 100, True),  # a laptop: no Ray needed
    ("auto", 100, False),  # a cluster named: Ray plans
    (None, 2001, False),  # over train.driver_decode_max_rows: Ray Data decodes
])
def test_placement_without_ray_only_for_a_small_split_and_no_cluster(address, rows, free):
    script = (
        "import json, sys, ray\n"
        "from faceproc.config import Config\n"
        "from faceproc.train.placement import placement_without_ray\n"
        f"config = Config(output='/tmp/unused', ray_address={address!r})\n"
        f"where = placement_without_ray(config, 1, {rows})\n"
        "print(json.dumps({'free': where is not None and where.in_driver, 'ray_started': ray.is_initialized()}))\n"
    )
    assert run_in_fresh_process(script, timeout=300) == {"free": free, "ray_started": False}


@pytest.mark.slow
def test_facenet_default_reaches_092_on_the_val_photos(real_out):
    from faceproc.core.images import decode_png
    from faceproc.core.shards import read_live_faces

    (result,) = run_train(_config(real_out, models=["facenet"]))
    assert result["status"] == "ok", result["reason"]
    import faceproc.models.layers  # noqa: F401
    from faceproc.models.saving import load_model

    model = load_model(str(real_out / "models" / "facenet" / "model.keras"))
    classes = json.loads((real_out / "models" / "facenet" / "classes.json").read_text())
    val = read_live_faces(str(real_out), "val", ["image", "label", "source_path", "source_sha256"]).to_pandas()
    images = np.stack([decode_png(b) for b in val.image]).astype(np.float32)
    predicted = [classes[i] for i in model.predict(images, verbose=0).argmax(axis=1)]
    correct = sum(p == t for p, t in zip(predicted, val.label))
    assert correct / 25 >= 0.92  # rejected val photos count as errors
    assert (real_out / "models" / "facenet" / "centroids.json").exists()


def test_the_model_fingerprint_follows_the_recipe_and_facenet_weights_by_content(tmp_path):
    import dataclasses

    from faceproc.models.registry import resolve_spec
    from faceproc.train.data import TrainingData
    from faceproc.train.run import inputs_fingerprint, model_inputs

    def settings_fingerprint(config, spec, data):
        return inputs_fingerprint(model_inputs(config, spec, data))

    data = TrainingData(["a", "b"], 4, 1, frozenset(), "photos-v1", 4, None, 5)
    config = Config(output=str(tmp_path))
    cnn = resolve_spec("cnn", config.train)
    base = settings_fingerprint(config, cnn, data)
    assert settings_fingerprint(config, dataclasses.replace(cnn, image_size=48), data) != base
    assert settings_fingerprint(config, dataclasses.replace(cnn, min_epochs=5), data) != base
    assert settings_fingerprint(config, cnn, dataclasses.replace(data, fingerprint="photos-v2")) != base
    config.train.facenet_weights = str(tmp_path / "elsewhere.h5")
    assert settings_fingerprint(config, cnn, data) == base  # cnn does not depend on FaceNet's weights

    first, moved = tmp_path / "a" / "facenet_keras.h5", tmp_path / "b" / "facenet_keras.h5"
    for path, content in ((first, b"weights-1"), (moved, b"weights-1")):
        path.parent.mkdir()
        path.write_bytes(content)
    facenet = resolve_spec("facenet", config.train)
    config.train.facenet_weights = str(first)
    at_first = settings_fingerprint(config, facenet, data)
    config.train.facenet_weights = str(moved)
    assert settings_fingerprint(config, facenet, data) == at_first  # the same file in another folder
    moved.write_bytes(b"weights-two")  # a new size too: the digest is cached per (size, mtime), and mtime is coarse
    assert settings_fingerprint(config, facenet, data) != at_first  # new weights: a new model


@pytest.mark.slow
def test_models_trained_at_once_in_a_fresh_process(tmp_path):
    """`train.concurrent` fits the models in driver threads. In a fresh process TensorFlow, h5py and
    the builders are not imported yet, and threads importing them at once can see each other's
    half-imported modules; so the CLI runs in a process of its own, with a local Ray of its own: cnn
    trains while resnet50_imagenet looks for its weights (the resnet module and h5py) and is skipped."""
    out = tmp_path / "out"
    write_face_shards(out, COLOURS)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(FACEPROC_IMAGENET_WEIGHTS_URL="http://127.0.0.1:9/resnet50_notop.h5", KERAS_HOME=str(tmp_path / "keras"))
    done = subprocess.run(
        [sys.executable, "-m", "faceproc.cli", "train", "--output", str(out), "--epochs", "1",
         "--models", "cnn,resnet50_imagenet", "--set", "train.concurrent=true", "--set", "train.holdout_fraction=0.25",
         "--set", f"models_dir={tmp_path / 'models'}"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {name: json.loads((out / "models" / name / "result.json").read_text())
               for name in ("cnn", "resnet50_imagenet")}
    assert {name: r["status"] for name, r in results.items()} == {"cnn": "ok", "resnet50_imagenet": "skipped"}, results
    again = subprocess.run(done.args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    lines = {line.split()[0]: line for line in again.stdout.splitlines() if line.strip()}
    assert "up to date" in lines["cnn"] and "not retrained" in lines["cnn"], again.stdout
    assert "skipped, kept" in lines["resnet50_imagenet"], again.stdout  # no new download attempt within the hour
