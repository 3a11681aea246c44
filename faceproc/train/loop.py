"""`train_func`: what every Ray Train worker (or the driver, in Ray Train's local mode) runs, and nothing else.

Each epoch fits once over this worker's shard, scores the holdout, and reports its metrics to Ray
Train, with a checkpoint (the epoch's weights, early-stopping state and history, and the weights of
the epoch with the lowest holdout loss when that is an earlier one) when the holdout loss improved,
at the last epoch, and every RESUME_EVERY epochs. Ray Train keeps the latest: a worker restarted
after a failure resumes from it instead of starting over, and the last one holds the model to keep.
In the driver (Ray Train's local mode, `LoopConfig.in_driver`) nothing can resume, so only the last
epoch writes one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

WEIGHTS_FILE = "model.weights.npz"  # the checkpoint's epoch: where a resume goes on
BEST_WEIGHTS_FILE = "best.weights.npz"  # the epoch with the lowest holdout loss, when it is an earlier one
STATE_FILE = "state.json"
SCORE = "holdout_loss"  # what the kept weights are chosen by (lowest)
# Epochs between checkpoints kept only for resuming: Ray Train's upload of one, however small, takes
# about 0.4 s on its own thread, and the run waits for every upload before it ends, which for an
# epoch of 0.04 s (a FaceNet head) cost ten times the training. On a worker a better holdout loss
# and the last epoch are always kept; in the driver, only the last.
RESUME_EVERY = 10


@dataclass(frozen=True)
class LoopConfig:
    """What every worker needs to train one model; built by the driver, passed through Ray Train."""

    model: str  # the model's name, for the epoch lines
    build: Callable[[int], Any]  # num_classes -> an uncompiled keras.Model (warm in the driver: the current one)
    optimizer: Callable[[int], Any]  # steps per epoch -> a fresh Keras optimizer on its schedule
    num_classes: int
    feature: str  # the dataset column the model takes: "image" or "embedding"
    in_memory: dict[str, dict[str, np.ndarray]]  # in the driver: splits ("fit", "holdout") it holds as columns
    has_holdout: bool
    epochs: int
    batch_size: int
    patience: int  # epochs without a better holdout loss before stopping
    min_epochs: int  # no early stop before this many epochs
    seed: int
    use_gpu: bool
    cpus_per_worker: float
    cache_in_worker: bool  # keep the shard in the worker's memory after the first epoch
    steps_per_epoch: int  # batches of this worker's share per epoch, for the learning-rate schedule
    augment: bool  # online augmentation of the fitting faces
    initial_weights: Any = None  # ObjectRef of the current model's weight list: a warm start on workers (warm_start.py)
    warm_start: bool = False  # fine-tuning the current model: an epoch replaces its weights only by beating them
    in_driver: bool = False  # Ray Train's local mode: the driver's own thread pools, logging and console
    checkpoint_root: str | None = None  # where checkpoints are written; None: the system's temporary folder


@dataclass
class LoopState:
    """Everything needed to resume: the next epoch, early-stopping counters and the history so far."""

    next_epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1  # the epoch whose weights are the model; -1 before the first, or the starting weights
    start_loss: float | None = None  # a warm start: the holdout loss of the weights it started from
    bad_epochs: int = 0
    resumed_at: list[int] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=lambda: {
        "epoch": [], "loss": [], "accuracy": [], "holdout_loss": [], "holdout_accuracy": []})


def write_checkpoint(weights: list[np.ndarray], state: LoopState, best_weights: list[np.ndarray] | None = None,
                     root: str | None = None) -> Any:
    """A new directory under `root` holding the epoch's weights, the loop state and `best_weights`
    (the best epoch's, when it is not this one), as a Ray Train checkpoint. Ray Train uploads it on
    its own thread while the next epoch runs, then deletes it. Weights are Keras' weight list in one
    .npz: a third of the time of `save_weights`' HDF5 for ResNet50's 322 arrays."""
    from ray.train import Checkpoint

    directory = tempfile.mkdtemp(prefix="faceproc-checkpoint-", dir=root)
    np.savez(os.path.join(directory, WEIGHTS_FILE), *weights)
    if best_weights is not None:
        np.savez(os.path.join(directory, BEST_WEIGHTS_FILE), *best_weights)
    with open(os.path.join(directory, STATE_FILE), "w") as stream:
        json.dump(asdict(state), stream)
    return Checkpoint.from_directory(directory)


def read_state(directory: str) -> LoopState:
    """The loop state `write_checkpoint` saved."""
    with open(os.path.join(directory, STATE_FILE)) as stream:
        return LoopState(**json.load(stream))


def read_weights(directory: str, best: bool = False) -> list[np.ndarray]:
    """The checkpoint's epoch's weights, or with `best` the best epoch's (the same when no
    earlier epoch was better), for a model built the same way."""
    name = BEST_WEIGHTS_FILE if best and os.path.exists(os.path.join(directory, BEST_WEIGHTS_FILE)) else WEIGHTS_FILE
    with np.load(os.path.join(directory, name)) as arrays:
        return [arrays[f"arr_{index}"] for index in range(len(arrays.files))]


def record_epoch(state: LoopState, epoch: int, holdout_loss: float) -> bool:
    """Count `epoch` into the early-stopping state; True when its weights are the best so far. The
    first epoch always is (there must be a model to keep) unless a warm start's starting weights
    scored `start_loss`, which it must then beat; a non-finite loss counts as infinite, so that a
    diverged first epoch does not stand in for the first finite one."""
    loss = finite_loss(holdout_loss)
    improved = (state.best_epoch < 0 and state.start_loss is None) or loss < state.best_loss - 1e-6
    if improved:
        state.best_loss, state.best_epoch, state.bad_epochs = loss, epoch, 0
    else:
        state.bad_epochs += 1
    state.next_epoch = epoch + 1
    return improved


def early_stop(loop: LoopConfig, state: LoopState, epoch: int) -> bool:
    """Whether training stops after `epoch`, `patience` epochs without a better holdout loss and not
    before `min_epochs`; the schedule's last epoch ends it anyway, and is not called an early stop."""
    return state.bad_epochs >= loop.patience and loop.min_epochs <= epoch + 1 < loop.epochs


def finite_loss(loss: float) -> float:
    return float(loss) if math.isfinite(loss) else math.inf


def epoch_line(model: str, epoch: int, epochs: int, scores: dict[str, float], seconds: float, stop: bool) -> str:
    """One line per epoch for the console, printed by the chief worker; the epoch's seconds (fit and
    holdout) say how long the rest will take, which on a slow CPU is minutes per model."""
    return (f"{model} epoch {epoch + 1}/{epochs}: loss {scores['loss']:.3f} acc {scores['accuracy']:.3f}, "
            f"holdout loss {scores['holdout_loss']:.3f} acc {scores['holdout_accuracy']:.3f}, {seconds:.1f} s"
            + (" (early stop)" if stop else ""))


def configure_cpu_threads(tf: Any, cpus: float) -> None:
    """Both TensorFlow thread pools sized to the cores Ray reserved rather than to the whole node,
    so workers sharing a node do not oversubscribe it. One inter-op thread (Intel's oneDNN advice)
    cost resnet50 7% per epoch on 2 cores; the epoch stalls it seemed to cure came from tf.data's
    autotuner, which `feed.static_pipeline` turns off (docs/benchmarks.md, "Training")."""
    threads = max(1, round(cpus))
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.config.threading.set_intra_op_parallelism_threads(threads)


def distribution_strategy(tf: Any, workers: int) -> Any:
    """MultiWorkerMirroredStrategy across workers; a lone worker uses TensorFlow's default strategy,
    since its collective ops only add waits there (1.5-2x the epoch time on 2 cores)."""
    return tf.distribute.MultiWorkerMirroredStrategy() if workers > 1 else tf.distribute.get_strategy()


def train_func(config: dict[str, LoopConfig]) -> None:
    """Ray Train entry point: `config["loop"]` is the LoopConfig `faceproc.train.trainer` made."""
    import ray.train
    from ray.train import CheckpointUploadMode

    from faceproc.core.console import quiet_train_worker
    from faceproc.models.keras_env import keras, tf
    from faceproc.train.feed import ShardFeed

    loop = config["loop"]
    if not loop.in_driver:  # the driver's console and TensorFlow are its own, and set up already
        quiet_train_worker()  # `epoch_line` is the progress, not Keras' bars or Ray Train's report lines
        if not loop.use_gpu:
            configure_cpu_threads(tf, loop.cpus_per_worker)
    keras.utils.set_random_seed(loop.seed)
    context = ray.train.get_context()
    strategy = distribution_strategy(tf, context.get_world_size())
    with strategy.scope():
        model = loop.build(loop.num_classes)
        model.compile(optimizer=loop.optimizer(loop.steps_per_epoch), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])

    state = LoopState()
    best_weights: list[np.ndarray] | None = None  # the model so far: the best epoch's weights
    checkpoint = ray.train.get_checkpoint()
    if loop.initial_weights is not None and not checkpoint:  # a warm start; a resume has its own weights
        model.set_weights(ray.get(loop.initial_weights))
    if checkpoint:
        with checkpoint.as_directory() as directory:
            state = read_state(directory)
            model.set_weights(read_weights(directory))
            best_weights = read_weights(directory, best=True)
        state.resumed_at.append(state.next_epoch)
        # the learning-rate schedule goes on where the failed run stopped, not from its warm-up
        model.optimizer.iterations.assign(state.next_epoch * loop.steps_per_epoch)

    def split(name: str) -> Any:  # the driver's own columns, else this worker's shard
        return loop.in_memory[name] if name in loop.in_memory else ray.train.get_dataset_shard(name)

    feature, batch_size = loop.feature, loop.batch_size
    fit_feed = ShardFeed(split("fit"), feature, batch_size, loop.cache_in_worker, shuffle=True, augment=loop.augment)
    holdout_feed = (ShardFeed(split("holdout"), feature, batch_size, loop.cache_in_worker, shuffle=False)
                    if loop.has_holdout else None)
    if loop.warm_start and holdout_feed is not None and not checkpoint:  # the current model is the one to beat
        scored = model.evaluate(holdout_feed.epoch(loop.seed), verbose=0, return_dict=True)
        state.start_loss = state.best_loss = finite_loss(scored["loss"])
        best_weights = model.get_weights()
    chief = context.get_world_rank() == 0  # the only worker whose checkpoints are kept
    for epoch in range(state.next_epoch, loop.epochs):
        started = time.perf_counter()
        fitted = model.fit(fit_feed.epoch(loop.seed + epoch), epochs=1, verbose=0).history
        scores = {"loss": fitted["loss"][-1], "accuracy": fitted["accuracy"][-1]}
        if holdout_feed is not None:
            scored = model.evaluate(holdout_feed.epoch(loop.seed), verbose=0, return_dict=True)
            scores.update(holdout_loss=scored["loss"], holdout_accuracy=scored["accuracy"])
        else:
            scores.update(holdout_loss=scores["loss"], holdout_accuracy=scores["accuracy"])
        seconds = time.perf_counter() - started
        state.history["epoch"].append(epoch)
        for key, value in scores.items():
            state.history[key].append(float(value))

        improved = record_epoch(state, epoch, scores[SCORE])
        weights = model.get_weights()  # every worker: under MWMS, reading BatchNorm statistics is collective
        if improved:
            best_weights = weights
        stop = early_stop(loop, state, epoch)
        metrics = {**scores, "epoch": epoch, "stopped_early": stop}
        if chief:
            print(epoch_line(loop.model, epoch, loop.epochs, scores, seconds, stop), flush=True)
        last = stop or epoch == loop.epochs - 1
        keep = chief and (last or (not loop.in_driver and (improved or (epoch + 1) % RESUME_EVERY == 0)))
        saved = (write_checkpoint(weights, state, None if improved else best_weights, loop.checkpoint_root)
                 if keep else None)
        # Uploaded on Ray Train's own thread: a synchronous report also waits for the controller's
        # next poll of the workers (faceproc.core.ray_env.POLL_SECONDS).
        ray.train.report(metrics, checkpoint=saved, checkpoint_upload_mode=CheckpointUploadMode.ASYNC)
        if stop:
            break
