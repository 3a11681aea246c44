"""Ray Train wiring: what its controller imports, and which weights a training keeps, in the driver
and on a worker."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
import pytest
import ray.cloudpickle as cloudpickle

from faceproc.config import Config
from faceproc.models.facenet import EMBEDDING_DIM, build_embedding_head
from faceproc.models.registry import resolve_spec
from faceproc.train.loop import SCORE
from faceproc.train.placement import Placement
from faceproc.train.trainer import backend, fit_with_ray_train

UNPICKLE = ("import pickle, sys; pickle.loads(sys.stdin.buffer.read()); "
            "print(','.join(name for name in ('tensorflow', 'ray.train.tensorflow') if name in sys.modules))")


def _imports_when_unpickled(config: object) -> str:
    """The heavy modules a fresh process imports to unpickle `config`, as Ray Train's controller does."""
    done = subprocess.run([sys.executable, "-c", UNPICKLE], input=cloudpickle.dumps(config),
                          capture_output=True, check=True)
    return done.stdout.decode().strip()


def test_a_lone_worker_backend_does_not_import_tensorflow_into_the_controller():
    from ray.train.tensorflow import TensorflowConfig

    assert _imports_when_unpickled(backend(1)) == ""
    assert isinstance(backend(2), TensorflowConfig)  # workers together need TF_CONFIG for MultiWorkerMirroredStrategy
    assert "tensorflow" in _imports_when_unpickled(backend(2)).split(",")  # what the lone worker is spared


def _noise(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings with labels that nothing predicts: the holdout loss rises once the head memorises."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, EMBEDDING_DIM)).astype(np.float32), rng.integers(0, 2, rows).astype(np.int32)


@pytest.mark.parametrize("in_driver, columns", [(True, False), (False, False), (True, True), (False, True)])
def test_the_kept_weights_are_the_best_holdout_epochs_in_the_driver_and_on_a_worker(ray_session, tmp_path, in_driver,
                                                                                     columns, monkeypatch):
    """Ray Datasets or the driver's numpy columns (`data.Columns`: kept in memory for the driver's
    loop, put in the object store for a worker) train the same way."""
    import ray

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this process's temporary folders, and no other's

    fit_x, fit_y = _noise(64, 0)
    holdout_x, holdout_y = _noise(32, 1)
    pid_file = tmp_path / "built_in_pid"

    def build(num_classes: int) -> Any:
        pid_file.write_text(str(os.getpid()))
        return build_embedding_head(num_classes)

    config = Config(output=str(tmp_path / "out"))
    config.train.patience = 20
    spec = dataclasses.replace(resolve_spec("facenet", config.train), epochs=6, learning_rate=0.5)
    where = Placement(workers=1, use_gpu=False, cpus_per_worker=1.0, gpus_per_worker=0.0, in_driver=in_driver)
    if columns:
        fit, holdout = {"embedding": fit_x, "label": fit_y}, {"embedding": holdout_x, "label": holdout_y}
    else:
        fit = ray.data.from_items([{"embedding": x, "label": y} for x, y in zip(fit_x, fit_y)])
        holdout = ray.data.from_items([{"embedding": x, "label": y} for x, y in zip(holdout_x, holdout_y)])
    state, weights = fit_with_ray_train(config, spec, where, build, 2, "embedding", fit, holdout, fit_rows=64)

    assert (int(pid_file.read_text()) == os.getpid()) is in_driver
    assert len(state.history["epoch"]) == 6 and state.best_loss == min(state.history[SCORE])
    assert state.best_epoch == int(np.argmin(state.history[SCORE])) < 5  # an earlier epoch than the last
    head = build_embedding_head(2)
    head.set_weights(weights)
    head.compile(loss="sparse_categorical_crossentropy")
    assert head.evaluate(holdout_x, holdout_y, verbose=0) == pytest.approx(state.best_loss, abs=1e-4)
    assert list((tmp_path / "out" / "_ray_train").iterdir()) == []  # the run's checkpoints went, the driver's too
    assert not list(tmp_path.glob("faceproc-*"))  # none written outside OUT, where a killed run would leave them


def test_start_retries_cover_start_wait_minutes(monkeypatch):
    from faceproc.train.trainer import start_retries

    monkeypatch.delenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", raising=False)
    assert start_retries(30) == 29  # 30 starts of Ray's 60 s each
    assert start_retries(0) == 0  # one start, no retry
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "2")
    assert start_retries(0.1) == 2


def test_workers_no_node_can_hold_fail_the_training_after_start_wait_minutes(ray_session, tmp_path, monkeypatch):
    """A lost node that nothing replaces leaves a worker group without resources: Ray Train's default
    retries its start without end, and the run waited forever."""
    import ray

    from faceproc.train.trainer import RayTrainGaveUp

    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "2")  # Ray Train passes it to its controller
    config = Config(output=str(tmp_path / "out"))
    config.train.start_wait_minutes = 0.1  # three starts of 2 s
    spec = dataclasses.replace(resolve_spec("facenet", config.train), epochs=1)
    where = Placement(workers=1, use_gpu=False, cpus_per_worker=1000.0, gpus_per_worker=0.0)  # no node has 1000
    fit_x, fit_y = _noise(16, 0)
    with pytest.raises(RayTrainGaveUp, match=r"WorkerGroupStartupTimeoutError: .*train\.start_wait_minutes, 0\.1 min"):
        fit_with_ray_train(config, spec, where, build_embedding_head, 2, "embedding",
                           {"embedding": fit_x, "label": fit_y}, None, fit_rows=16)
    pending = [pg for pg in ray.util.placement_group_table().values() if pg["state"] == "PENDING"]
    assert not pending, pending  # nothing left waiting for the resources


@pytest.mark.parametrize("in_driver", [True, False], ids=["driver", "worker"])
def test_a_warm_start_that_only_gets_worse_keeps_the_weights_it_started_from(ray_session, tmp_path, in_driver):
    """Fine-tuning on labels nothing predicts raises the holdout loss from the first epoch: the
    current model is kept rather than replaced by a worse one."""
    fit_x, fit_y = _noise(64, 0)
    holdout_x, holdout_y = _noise(32, 1)
    current = build_embedding_head(2)
    start = [w.copy() for w in current.get_weights()]
    config = Config(output=str(tmp_path / "out"))
    spec = dataclasses.replace(resolve_spec("facenet", config.train), epochs=3, learning_rate=0.5)
    where = Placement(workers=1, use_gpu=False, cpus_per_worker=1.0, gpus_per_worker=0.0, in_driver=in_driver)
    build = (lambda num_classes: current) if in_driver else build_embedding_head
    state, weights = fit_with_ray_train(config, spec, where, build, 2, "embedding",
                                        {"embedding": fit_x, "label": fit_y},
                                        {"embedding": holdout_x, "label": holdout_y}, fit_rows=64,
                                        initial_weights=None if in_driver else start, warm_start=True)

    assert state.start_loss is not None and min(state.history[SCORE]) > state.start_loss  # every epoch was worse
    assert (state.best_epoch, state.best_loss, len(state.history["epoch"])) == (-1, state.start_loss, 3)
    for kept, original in zip(weights, start, strict=True):
        np.testing.assert_array_equal(kept, original)



def test_a_warm_start_that_gets_better_keeps_its_best_epoch(ray_session, tmp_path):
    """Labels the embeddings predict: the first epoch already beats the starting weights' holdout loss."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, EMBEDDING_DIM)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    current = build_embedding_head(2)
    start = [w.copy() for w in current.get_weights()]
    config = Config(output=str(tmp_path / "out"))
    spec = dataclasses.replace(resolve_spec("facenet", config.train), epochs=3, learning_rate=0.05)
    where = Placement(workers=1, use_gpu=False, cpus_per_worker=1.0, gpus_per_worker=0.0, in_driver=True)
    state, weights = fit_with_ray_train(config, spec, where, lambda num_classes: current, 2, "embedding",
                                        {"embedding": x[:64], "label": y[:64]},
                                        {"embedding": x[64:], "label": y[64:]}, fit_rows=64, warm_start=True)

    assert state.best_epoch >= 0 and state.best_loss == min(state.history[SCORE]) < state.start_loss
    assert any(not np.array_equal(kept, original) for kept, original in zip(weights, start, strict=True))
