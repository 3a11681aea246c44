"""`train_func`: what every Ray Train worker runs, and nothing else.

Each epoch fits once over this worker's shard, scores the holdout, and reports metrics plus a
checkpoint (last weights, best weights, history) to Ray Train. A worker restarted after a failure
resumes from the last checkpoint instead of starting over.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

LAST_WEIGHTS = "last.weights.h5"
BEST_WEIGHTS = "best.weights.h5"
STATE_FILE = "state.json"


@dataclass
class LoopState:
    """Everything needed to resume: the next epoch, early-stopping counters and the history so far."""

    next_epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    resumed_at: list[int] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=lambda: {
        "epoch": [], "loss": [], "accuracy": [], "holdout_loss": [], "holdout_accuracy": []})


def quiet_worker_logs() -> None:
    """Workers otherwise print TensorFlow's collective-op chatter and a progress bar per epoch."""
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in ("tensorflow", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)


def train_func(config: dict[str, Any]) -> None:
    """Ray Train entry point; `config` comes from faceproc.train.fit_model."""
    import ray.train
    from ray.train import Checkpoint

    from faceproc.models.keras_env import keras, tf

    quiet_worker_logs()
    keras.utils.set_random_seed(config["seed"])
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = config["build"](config["num_classes"])
        model.compile(optimizer=config["optimizer"](), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])

    state, best_dir = LoopState(), tempfile.mkdtemp(prefix="faceproc-best-")
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = LoopState(**json.loads(open(os.path.join(directory, STATE_FILE)).read()))
            model.load_weights(os.path.join(directory, LAST_WEIGHTS))
            shutil.copy(os.path.join(directory, BEST_WEIGHTS), os.path.join(best_dir, BEST_WEIGHTS))
        state.resumed_at.append(state.next_epoch)

    feature = config["feature"]
    fit_shard = ray.train.get_dataset_shard("fit")
    holdout_shard = ray.train.get_dataset_shard("holdout") if config["has_holdout"] else None
    rank = ray.train.get_context().get_world_rank()
    for epoch in range(state.next_epoch, config["epochs"]):
        fit_data = fit_shard.to_tf(feature, "label", batch_size=config["batch_size"],
                                   local_shuffle_buffer_size=256, local_shuffle_seed=config["seed"] + epoch)
        fitted = model.fit(fit_data, epochs=1, verbose=0).history
        scores = {"loss": fitted["loss"][-1], "accuracy": fitted["accuracy"][-1]}
        if holdout_shard is not None:
            holdout = holdout_shard.to_tf(feature, "label", batch_size=config["batch_size"])
            scored = model.evaluate(holdout, verbose=0, return_dict=True)
            scores.update(holdout_loss=scored["loss"], holdout_accuracy=scored["accuracy"])
        else:
            scores.update(holdout_loss=scores["loss"], holdout_accuracy=scores["accuracy"])
        state.history["epoch"].append(epoch)
        for key, value in scores.items():
            state.history[key].append(float(value))

        improved = scores["holdout_loss"] < state.best_loss - 1e-6
        if improved:
            state.best_loss, state.best_epoch, state.bad_epochs = float(scores["holdout_loss"]), epoch, 0
            model.save_weights(os.path.join(best_dir, BEST_WEIGHTS))
        else:
            state.bad_epochs += 1
        state.next_epoch = epoch + 1
        stop = state.bad_epochs >= config["patience"]
        with tempfile.TemporaryDirectory() as directory:
            model.save_weights(os.path.join(directory, LAST_WEIGHTS))
            shutil.copy(os.path.join(best_dir, BEST_WEIGHTS), os.path.join(directory, BEST_WEIGHTS))
            with open(os.path.join(directory, STATE_FILE), "w") as stream:
                json.dump(asdict(state), stream)
            ray.train.report({**scores, "epoch": epoch, "stopped_early": stop},
                             checkpoint=Checkpoint.from_directory(directory) if rank == 0 else None)
        if stop:
            break
