"""`faceproc train`: fit each requested model with Ray Train and save it under OUT/models/<name>/.

The driver resolves weights, builds the datasets and the trainer; `train_loop.train_func` runs on
the workers. A model whose weights cannot be had is `skipped`, one that breaks is `failed`, and
either way the other models go on.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from faceproc.core import storage
from faceproc.core.errors import describe
from faceproc.config import Config, TrainConfig
from faceproc.models.errors import UnknownModelError, WeightsError, WeightsUnavailable
from faceproc.models.registry import BuildContext, ModelSpec, parse_model_names, resolve_spec
from faceproc.train.data import TrainingData, decode_faces, load_training_data, split_holdout
from faceproc.train.loop import SCORE, read_state, read_weights, train_func

log = logging.getLogger(__name__)
MODELS_DIR = "models"


@dataclass
class Placement:
    """How many workers, and what each one asks Ray for."""

    workers: int
    use_gpu: bool
    cpus_per_worker: float
    gpus_per_worker: float

    @property
    def device(self) -> str:
        return "gpu" if self.use_gpu else "cpu"


def model_dir(out: str, name: str) -> str:
    return storage.join(out, MODELS_DIR, name)


def placement(config: Config, trainers: int = 1) -> Placement:
    """Placement on the running Ray cluster (see `plan_placement`)."""
    from faceproc.core.ray_env import cluster_cpus, cluster_gpus, cpu_nodes, largest_node_cpus

    return plan_placement(config.train, cluster_cpus(), largest_node_cpus(), cluster_gpus(), cpu_nodes(), trainers)


def plan_placement(train: TrainConfig, cpus: float, node_cpus: float, gpus: float, nodes: int = 1,
                   trainers: int = 1) -> Placement:
    """GPU workers when the cluster has a GPU per worker (or when asked); else CPU workers sharing the
    CPUs of `trainers` concurrent trainings, never more than one node has (Ray caps a worker's threads
    at what it reserved). Faces decoded every epoch (`materialize` off) need a core left for Ray
    Data's tasks; reserving every core then slowed the holdout pass 6x. Without `train.workers`: one
    worker per GPU, or one per CPU node, since two MultiWorkerMirroredStrategy workers on one CPU
    node were no faster end to end than one (docs/benchmarks.md, "Training")."""
    gpus_per_worker = train.gpus_per_worker
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus >= max(1, train.workers or 1) * trainers else 0.0
    if gpus_per_worker > 0:
        workers = train.workers or max(1, int(gpus // (gpus_per_worker * trainers)))
        return Placement(workers, True, 1.0, gpus_per_worker)
    workers = max(1, train.workers or nodes)
    spare = 0 if train.materialize else 1
    return Placement(workers, False, max(0.25, min(node_cpus, (cpus - spare) / (workers * trainers))), 0.0)


def run_train(config: Config, force: bool = False) -> list[dict[str, Any]]:
    """Train every model in config.train.models; returns one result dict per model.

    A model whose saved result was trained on the same live photos with the same settings is kept
    as it is (`up_to_date`), unless `force`.
    """
    from faceproc.core.ray_env import init_ray

    names = parse_model_names(config.train.models)
    init_ray(config.ray_address)
    data = load_training_data(config.output, config.train.holdout_fraction, config.train.seed)
    log.info("training %s on %d photos (+%d held out for early stopping), %d people",
             ", ".join(names), data.fit_photos, data.holdout_photos, len(data.classes))
    concurrent = config.train.concurrent and len(names) > 1
    where = placement(config, trainers=len(names) if concurrent else 1)
    if concurrent:
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return list(pool.map(lambda name: train_model(config, name, data, where, force), names))
    return [train_model(config, name, data, where, force) for name in names]


def settings_fingerprint(config: Config, spec: ModelSpec, data: TrainingData) -> str:
    """What a trained model depends on: the live train photos and every setting that shapes it."""
    train = config.train
    settings = {
        "data": data.fingerprint, "epochs": spec.epochs, "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate, "optimizer": spec.optimizer, "seed": train.seed,
        "holdout_fraction": train.holdout_fraction, "patience": train.patience,
        "facenet_mode": train.facenet_mode, "facenet_weights": train.facenet_weights,
        "imagenet_weights": train.imagenet_weights,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _up_to_date(target: str, fingerprint: str) -> dict[str, Any] | None:
    """The saved result when it was trained with `fingerprint` and its model file is there."""
    result_uri = storage.join(target, "result.json")
    if not storage.exists(result_uri) or not storage.exists(storage.join(target, "model.keras")):
        return None
    saved = storage.read_json(result_uri)
    if saved.get("status") == "ok" and saved.get("fingerprint") == fingerprint:
        return saved
    return None


def train_model(config: Config, name: str, data: TrainingData, where: Placement,
                force: bool = False) -> dict[str, Any]:
    """Fit one model and write its directory; never raises for a model-specific problem."""
    started = time.monotonic()
    target = model_dir(config.output, name)
    storage.restore_dir(target)  # a run that died while swapping this model in
    staging = storage.join(config.output, MODELS_DIR, f".{name}.staging")
    storage.delete_dir(staging)
    result: dict[str, Any] = {"model": name, "status": "ok", "reason": None, "workers": where.workers,
                              "device": where.device}
    try:
        spec = resolve_spec(name, config.train)
        fingerprint = settings_fingerprint(config, spec, data)
        saved = None if force else _up_to_date(target, fingerprint)
        if saved is not None:
            log.info("%s: up to date (same photos and settings), not retrained", name)
            return {**saved, "up_to_date": True}
        result["fingerprint"] = fingerprint
        result.update(_fit(config, spec, data, where, staging))
    except WeightsUnavailable as exc:
        result.update(status="skipped", reason=str(exc))
    except (WeightsError, UnknownModelError) as exc:
        result.update(status="failed", reason=str(exc))
    except Exception as exc:  # a model that breaks must not stop the others
        log.exception("training %s failed", name)
        result.update(status="failed", reason=describe(exc))
    result["train_seconds"] = round(time.monotonic() - started, 1)
    # A new model's files are written aside and swapped in together, so evaluation never pairs
    # one run's model.keras with another's classes.json; a failure rewrites only result and config.
    written = staging if result["status"] == "ok" else target
    storage.write_json_atomic(storage.join(written, "config.json"), config.to_dict())
    storage.write_json_atomic(storage.join(written, "result.json"), result)
    if result["status"] == "ok":
        storage.replace_dir(staging, target)
    storage.delete_dir(staging)
    log.info("%s: %s%s (%.0f s)", name, result["status"],
             f" - {result['reason']}" if result["reason"] else "", result["train_seconds"])
    return result


def _fit(config: Config, spec: ModelSpec, data: TrainingData, where: Placement, into: str) -> dict[str, Any]:
    """Train `spec` and write its model, classes, history (and centroids) into the directory `into`."""
    context = BuildContext(train=config.train, models_dir=config.models_dir)
    num_classes = len(data.classes)
    frozen_facenet = spec.name == "facenet" and context.facenet_mode == "frozen"
    if frozen_facenet:
        from faceproc.models.facenet import attach_head, build_embedding_head
        from faceproc.models.facenet_weights import load_facenet_backbone

        backbone = load_facenet_backbone(context.facenet_weights_path)  # fails fast on a bad file
        fit, holdout = _embedding_datasets(config, context.facenet_weights_path, data, where)
        build: Callable[[int], Any] = build_embedding_head
        feature = "embedding"
    else:
        spec.build(num_classes, context)  # resolve weights in the driver: skip or fail fast
        build = functools.partial(_build_with_context, spec.build, context=context)
        fit, holdout = (_decoded(config, rows, data.classes) if rows is not None else None
                        for rows in (data.fit, data.holdout))
        feature = "image"

    latest, best = _run_trainer(config, spec, where, build, num_classes, feature, fit, holdout)
    with latest.as_directory() as directory:
        state = read_state(directory)
    with best.as_directory() as directory:
        best_state = read_state(directory)
        if frozen_facenet:
            head = build_embedding_head(num_classes)
            read_weights(head, directory)
            model = attach_head(backbone, head)
        else:
            model = spec.build(num_classes, context)
            read_weights(model, directory)
    _save_model(model, into)
    storage.write_json_atomic(storage.join(into, "classes.json"), data.classes)
    storage.write_json_atomic(storage.join(into, "history.json"), state.history)
    if frozen_facenet:
        _save_centroids(config, context.facenet_weights_path, data, into)
    return {
        "epochs_run": len(state.history["epoch"]),
        "best_epoch": best_state.next_epoch - 1,
        "best_holdout_loss": best_state.history[SCORE][-1],
        "resumed_at_epochs": state.resumed_at,
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "optimizer": spec.optimizer,
        "classes": data.classes,
        "fit_photos": data.fit_photos,
        "holdout_photos": data.holdout_photos,
    }


def _decoded(config: Config, rows, classes: list[str]):
    """Shard rows -> decoded faces and class ids; with `train.materialize`, decoded once into Ray's
    object store (spilling to disk when full) instead of re-read and re-decoded every epoch."""
    faces = rows.map_batches(decode_faces, fn_kwargs={"classes": classes}, batch_size=32)
    return faces.materialize() if config.train.materialize else faces


def _build_with_context(build: Callable, num_classes: int, context: BuildContext):
    return build(num_classes, context)


def _run_trainer(config: Config, spec: ModelSpec, where: Placement, build: Callable, num_classes: int,
                 feature: str, fit, holdout):
    """One TensorflowTrainer run; returns its latest checkpoint (the whole history inside) and the one
    with the lowest holdout loss (the weights to keep)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    datasets = {"fit": fit}
    if holdout is not None:
        datasets["holdout"] = holdout
    for dataset in datasets.values():  # workers print one line per epoch instead (train_loop.epoch_line)
        dataset.context.enable_progress_bars = False
    loop_config = {
        "model": spec.name,
        "build": build,
        "optimizer": spec.make_optimizer,
        "num_classes": num_classes,
        "feature": feature,
        "has_holdout": holdout is not None,
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "patience": config.train.patience,
        "seed": config.train.seed,
        "use_gpu": where.use_gpu,
        "cpus_per_worker": where.cpus_per_worker,
        "cache_in_worker": _fits_worker_cache(config.train.worker_cache_mb, where.workers, fit, holdout),
    }
    resources = {"CPU": where.cpus_per_worker}
    if where.use_gpu:
        resources["GPU"] = where.gpus_per_worker
    trainer = TensorflowTrainer(
        train_func,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=where.workers, use_gpu=where.use_gpu,
                                     resources_per_worker=resources),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["fit"]),
        run_config=RunConfig(
            name=f"{spec.name}-{int(time.time())}",
            storage_path=_ray_storage(config.output),
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=SCORE,
                                               checkpoint_score_order="min"),  # and always the latest
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{spec.name}: training ended without a checkpoint")
    return result.checkpoint, result.get_best_checkpoint(SCORE, "min") or result.checkpoint


def _fits_worker_cache(cache_mb: int, workers: int, fit, holdout) -> bool:
    """Whether each worker may hold its share of the fitting rows plus the whole holdout in its own
    memory; only materialized datasets know their size, the others stream every epoch."""
    from ray.data.dataset import MaterializedDataset

    datasets = [fit] if holdout is None else [fit, holdout]
    if not all(isinstance(dataset, MaterializedDataset) for dataset in datasets):
        return False
    share = fit.size_bytes() / workers + (holdout.size_bytes() if holdout is not None else 0)
    return share <= cache_mb * 2**20


def _ray_storage(out: str) -> str:
    """Ray Train keeps checkpoints here; on a cluster OUT is shared storage, so this is too."""
    uri = storage.join(out, "_ray_train")
    return uri if "://" in uri else os.path.abspath(uri)


def _embedding_datasets(config: Config, weights_path: str, data: TrainingData, where: Placement):
    """Cached FaceNet embeddings of the train faces, split like the images."""
    import numpy as np

    from faceproc.train.embeddings import ensure_embeddings, read_live_embeddings

    files = ensure_embeddings(config.output, weights_path, "train", num_gpus=1.0 if where.use_gpu else 0.0)
    rows = read_live_embeddings(config.output, files)
    index = {name: i for i, name in enumerate(data.classes)}

    def to_arrays(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"embedding": np.stack(batch["embedding"]).astype(np.float32),
                "label": np.array([index[n] for n in batch["label"]], np.int32)}

    fit, holdout = split_holdout(rows, set(data.held_paths))
    # 128 floats a row: materialized once, so the head's many cheap epochs do not re-read Parquet
    return (fit.map_batches(to_arrays).materialize(),
            holdout.map_batches(to_arrays).materialize() if holdout is not None else None)


def _save_centroids(config: Config, weights_path: str, data: TrainingData, target: str) -> None:
    """Per-person embedding centroids and the distance beyond which `predict` says unknown."""
    import numpy as np

    from faceproc.train.embeddings import ensure_embeddings, read_live_embeddings
    from faceproc.inference.predict import compute_centroids

    rows = read_live_embeddings(config.output, ensure_embeddings(config.output, weights_path, "train"))
    frame = rows.select_columns(["embedding", "label"]).to_pandas()  # 128 floats a row
    embeddings = np.stack(frame["embedding"].to_list()).astype(np.float32)
    centroids = compute_centroids(embeddings, frame["label"].to_list(), config.evaluate.unknown_quantile)
    storage.write_json_atomic(storage.join(target, "centroids.json"), centroids)


def _save_model(model, target: str) -> None:
    """Keras writes to a local file; storage moves it to OUT (local or object storage)."""
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.keras")
        model.save(local)
        with open(local, "rb") as stream:
            storage.write_bytes_atomic(storage.join(target, "model.keras"), stream.read())
