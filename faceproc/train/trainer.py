"""Ray Train wiring: one TensorflowTrainer run per model, from datasets to the weights it kept.

Everything the workers need travels in one typed `LoopConfig`; `loop.train_func` is what they run.
When the placement says so (`Placement.in_driver`), the same `train_func` runs in the driver through
Ray Train's local mode instead: no worker group to start and no second TensorFlow to import, and with
the split in the driver's memory (`data.Columns`) no Ray at all.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

from faceproc.config import Config
from faceproc.core import layout, storage
from faceproc.core.errors import describe
from faceproc.models.registry import ModelSpec
from faceproc.train.data import object_store_dataset
from faceproc.train.loop import LoopConfig, LoopState, read_state, read_weights, train_func
from faceproc.train.placement import Placement

log = logging.getLogger(__name__)

START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # Ray Train passes it on to its controller
DEFAULT_START_TIMEOUT_S = 60.0


def fit_with_ray_train(config: Config, spec: ModelSpec, where: Placement, build: Callable[[int], Any],
                       num_classes: int, feature: str, fit: Any, holdout: Any | None,
                       fit_rows: int, initial_weights: list | None = None,
                       warm_start: bool = False) -> tuple[LoopState, list]:
    """One TensorflowTrainer run over `fit` (`fit_rows` rows; `fit` and `holdout` are Ray Datasets, or
    `data.Columns` the driver decoded: its own loop trains from them in memory, workers get them
    through the object store), from what `build` returns: with
    `initial_weights` (a warm start on workers) set to them, else as built (a new model, or in the
    driver's warm start the current one); returns the loop's final state (history, best
    epoch) and the weights of the epoch with the lowest holdout loss, from its last checkpoint. With
    `warm_start` those are the starting weights unless an epoch beats them on the holdout."""
    import ray
    from ray.train import CheckpointConfig, ControllerError, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    splits = {"fit": fit} if holdout is None else {"fit": fit, "holdout": holdout}
    in_memory = {name: split for name, split in splits.items() if where.in_driver and isinstance(split, dict)}
    datasets = {name: object_store_dataset(split) if isinstance(split, dict) else split
                for name, split in splits.items() if name not in in_memory}
    for dataset in datasets.values():  # workers print one line per epoch instead (loop.epoch_line)
        dataset.context.enable_progress_bars = False
    run_name, storage_root = f"{spec.name}-{int(time.time())}", _ray_storage(config.output)
    for old in storage.list_dirs(storage_root):  # left by a killed run: a run never resumes another's
        if re.fullmatch(rf"{re.escape(spec.name)}-\d+", old):
            _discard_run_folder(storage.join(storage_root, old))
    # workers' checkpoints are uploaded and deleted by Ray Train; local mode deletes none of the driver's
    checkpoint_root = _driver_checkpoints(storage_root, run_name) if where.in_driver else None
    loop = LoopConfig(
        model=spec.name, build=build, optimizer=spec.make_optimizer, num_classes=num_classes, feature=feature,
        in_memory=in_memory, has_holdout=holdout is not None, epochs=spec.epochs, batch_size=spec.batch_size,
        patience=config.train.patience, min_epochs=spec.min_epochs, seed=config.train.seed, use_gpu=where.use_gpu,
        cpus_per_worker=where.cpus_per_worker,
        cache_in_worker=("fit" not in datasets  # the driver's columns: in memory already
                         or fits_worker_cache(config.train.worker_cache_mb, where.workers, datasets["fit"],
                                              datasets.get("holdout"))),
        steps_per_epoch=max(1, math.ceil(fit_rows / where.workers / spec.batch_size)),
        augment=feature == "image" and spec.online_augment and config.train.online_augment,
        initial_weights=None if initial_weights is None else ray.put(initial_weights),  # workers only
        warm_start=warm_start,
        in_driver=where.in_driver, checkpoint_root=checkpoint_root,
    )
    resources = {"CPU": where.cpus_per_worker}
    if where.use_gpu:
        resources["GPU"] = where.gpus_per_worker
    trainer = TensorflowTrainer(
        train_func,
        train_loop_config={"loop": loop},
        tensorflow_config=backend(where.workers),
        scaling_config=(ScalingConfig(num_workers=0) if where.in_driver else  # Ray Train's local mode
                        ScalingConfig(num_workers=where.workers, use_gpu=where.use_gpu,
                                      resources_per_worker=resources)),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["fit"]),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_root,
            failure_config=FailureConfig(max_failures=config.train.max_failures,
                                         controller_failure_limit=start_retries(config.train.start_wait_minutes)),
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # the latest holds the best weights too
        ),
    )
    try:
        try:
            result = trainer.fit()
        except ControllerError as exc:  # its own first line names no cause
            raise RayTrainGaveUp(f"{describe(getattr(exc, 'controller_failure', None) or exc)} (a worker group "
                                 "that cannot get its resources is retried for train.start_wait_minutes, "
                                 f"{config.train.start_wait_minutes:g} min)") from exc
        if result.checkpoint is None:
            raise RuntimeError(f"{spec.name}: training ended without a checkpoint")
        with result.checkpoint.as_directory() as directory:
            return read_state(directory), read_weights(directory, best=True)
    finally:  # its checkpoints (the model's weights, twice) served this fit's retries only
        _discard_run_folder(storage.join(storage_root, run_name))
        if checkpoint_root is not None and not checkpoint_root.startswith(storage_root):
            shutil.rmtree(checkpoint_root, ignore_errors=True)


def _driver_checkpoints(storage_root: str, run_name: str) -> str:
    """Where the driver's loop writes its checkpoints: in the run's folder on a local OUT, deleted
    with it (or, after a kill, by the next fit of the model), else in a temporary folder."""
    if not storage.is_local(storage_root):
        return tempfile.mkdtemp(prefix="faceproc-train-")
    folder = os.path.join(storage_root, run_name, "driver")
    os.makedirs(folder, exist_ok=True)
    return folder


def _discard_run_folder(uri: str) -> None:
    """Delete a Ray Train run folder; a store that refuses only leaves it for the next fit to retry,
    and never hides the fit's own outcome."""
    try:
        storage.delete_dir(uri)
    except OSError as exc:
        log.warning("could not delete Ray Train's run folder %s (%s); the next training retries", uri, exc)


class RayTrainGaveUp(RuntimeError):
    """Ray Train's controller stopped trying: most often its workers could not get their resources."""


def start_retries(wait_minutes: float) -> int:
    """Ray Train's `controller_failure_limit` for `train.start_wait_minutes`. A worker group that cannot
    get its resources fails its start after RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s by default)
    and Ray's default limit (-1) retries it without end: a cluster that lost a node for good, with
    nothing to replace it, held the run forever."""
    timeout = float(os.environ.get(START_TIMEOUT_ENV, DEFAULT_START_TIMEOUT_S))
    return max(0, math.ceil(wait_minutes * 60 / timeout) - 1)


def backend(workers: int) -> Any:
    """Ray's TensorflowConfig (TF_CONFIG on every worker, for MultiWorkerMirroredStrategy) when
    workers train together; a lone worker, which uses TensorFlow's default strategy, gets Ray's plain
    BackendConfig instead. Deserializing a TensorflowConfig imports `ray.train.tensorflow`, hence
    TensorFlow, in Ray Train's controller: about 4 s of a 13 s start-up on two cores
    (docs/benchmarks.md, "Inside a warm cnn fine-tuning")."""
    from ray.train.backend import BackendConfig
    from ray.train.tensorflow import TensorflowConfig

    return TensorflowConfig() if workers > 1 else BackendConfig()


def fits_worker_cache(cache_mb: int, workers: int, fit: Any, holdout: Any | None) -> bool:
    """Whether each worker may hold its share of the fitting rows plus the whole holdout in its own
    memory; only materialized datasets know their size, the others stream every epoch."""
    from ray.data.dataset import MaterializedDataset

    datasets = [fit] if holdout is None else [fit, holdout]
    if not all(isinstance(dataset, MaterializedDataset) for dataset in datasets):
        return False
    share = fit.size_bytes() / workers + (holdout.size_bytes() if holdout is not None else 0)
    return share <= cache_mb * 2**20


def _ray_storage(out: str) -> str:
    """Ray Train wants an absolute local path or a URI."""
    uri = layout.ray_train_storage(out)
    return uri if "://" in uri else os.path.abspath(uri)
