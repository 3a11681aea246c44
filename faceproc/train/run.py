"""`faceproc train`: fit each requested model with Ray Train and save it under OUT/models/<name>/.

The driver resolves weights, builds the datasets and hands them to `trainer.fit_with_ray_train`;
`loop.train_func` runs on the workers (or, for a small split on one node, in the driver);
`inference.artifact.ModelArtifact` writes the model's folder.
A model whose weights cannot be had is `skipped`, one that breaks is `failed`, and either way the
other models go on.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from faceproc.config import Config, TrainConfig
from faceproc.core import storage
from faceproc.core.errors import describe
from faceproc.core.schema import Status
from faceproc.core.text import plural
from faceproc.inference.artifact import ModelArtifact, TrainedFiles
from faceproc.inference.openset import threshold_warning
from faceproc.models.errors import UnknownModelError, WeightsError, WeightsUnavailable
from faceproc.models.registry import BuildContext, ModelSpec, parse_model_names, resolve_spec
from faceproc.train.data import HOLDOUT_METHOD, TrainingData, decoded_faces, load_training_data
from faceproc.train.embeddings import FaceNetEmbedder, embedding_datasets, train_centroids, weights_digest
from faceproc.train.placement import Placement, placement, placement_without_ray
from faceproc.train.trainer import fit_with_ray_train
from faceproc.train.warm_start import choose_start, continued_history, settings_of, warm_epochs

log = logging.getLogger(__name__)


SKIP_RETRY_SECONDS = 3600  # a model skipped for want of weights tries to get them again after this
WEIGHTS_INPUTS = ("imagenet_weights", "facenet_weights")  # `model_inputs` keys naming pretrained weights
# What training imports lazily in the driver. Models trained at once run in threads, and Python's
# imports must not race there (a thread can see another's half-imported module, e.g. h5py's), so
# `run_train` imports these first, in the main thread.
TRAINING_IMPORTS = ("faceproc.models.cnn", "faceproc.models.resnet", "faceproc.models.facenet",
                    "faceproc.models.facenet_weights", "faceproc.models.saving", "ray.train.tensorflow", "cv2")


def run_train(config: Config, force: bool = False) -> list[dict[str, Any]]:
    """Train every model in config.train.models; returns one result dict per model.

    A model whose saved result was trained on the same live photos with the same settings is kept
    as it is (`up_to_date`), unless `force`; so is one skipped for want of weights that are still
    not on this machine, for `SKIP_RETRY_SECONDS`. Ray starts only when some model trains, and not for
    a small split that the driver trains alone (`placement_without_ray`).
    """
    names = parse_model_names(config.train.models)
    data = load_training_data(config.output, config.train.holdout_fraction, config.train.seed)
    for name in names:
        ModelArtifact(config.output, name).recover()  # before anything reads or replaces a model's folder
    results = {name: standing_result(config, name, data, force) for name in names}
    to_train = [name for name in names if results[name] is None]
    if to_train:
        log.info("training %s on %d photos (+%d held out for early stopping), %d people",
                 ", ".join(to_train), data.fit_photos, data.holdout_photos, len(data.classes))
        concurrent = config.train.concurrent and len(to_train) > 1
        trainers = len(to_train) if concurrent else 1
        where = placement_without_ray(config, trainers, data.rows) or _placement_on_ray(config, to_train, trainers,
                                                                                          data.rows)
        if concurrent:
            for module in TRAINING_IMPORTS:
                importlib.import_module(module)
            with ThreadPoolExecutor(max_workers=len(to_train)) as pool:
                results.update(zip(to_train, pool.map(lambda name: train_model(config, name, data, where, force),
                                                      to_train)))
        else:
            results.update((name, train_model(config, name, data, where, force)) for name in to_train)
    return [results[name] for name in names]


def _placement_on_ray(config: Config, to_train: list[str], trainers: int, rows: int) -> Placement:
    """Join (or start) Ray, check that every node sees the paths training reads, and plan on it."""
    from faceproc.core.ray_env import init_ray, require_on_every_node

    init_ray(config.ray_address)
    context = BuildContext(train=config.train, models_dir=config.models_dir)
    require_on_every_node({"output": config.output, **({"train.facenet_weights": context.facenet_weights_path}
                                                      if "facenet" in to_train else {})})
    return placement(config, trainers=trainers, rows=rows)


def standing_result(config: Config, name: str, data: TrainingData, force: bool) -> dict[str, Any] | None:
    """The saved result this run keeps instead of training `name`, or None to train it.

    Kept: a model trained with the same inputs (`up_to_date`), and a model (or a retraining beside a
    usable one) `skipped` less than `SKIP_RETRY_SECONDS` ago whose weights are still not on this
    machine, whatever photos or recipe changed since (the download is not retried on every scheduled
    rerun; a weights file put in place, or another weights setting, is tried at once)."""
    if force:
        return None
    artifact = ModelArtifact(config.output, name)
    try:
        spec = resolve_spec(name, config.train)
        inputs = model_inputs(config, spec, data)
    except Exception:  # noqa: BLE001 - train_model records the failure with its reason
        return None
    saved = artifact.up_to_date_result(inputs_fingerprint(inputs))
    if saved is not None:
        log.info("%s: up to date (same photos and settings), not retrained", name)
        return {**saved, "up_to_date": True}
    last = artifact.last_attempt() or artifact.result()  # a skip beside a usable model is held too
    context = BuildContext(train=config.train, models_dir=config.models_dir)
    same_weights = all((last.get("inputs") or {}).get(key) == inputs.get(key) for key in WEIGHTS_INPUTS)
    if (last.get("status") == Status.SKIPPED and same_weights
            and time.time() - float(last.get("finished_at_unix") or 0) < SKIP_RETRY_SECONDS
            and spec.local_weights is not None and spec.local_weights(context) is None):
        log.info("%s: still skipped, its weights are not here (tried again hourly or with --force): %s",
                 name, last.get("reason"))
        return {**last, "up_to_date": True}
    return None


def inputs_fingerprint(inputs: dict[str, Any]) -> str:
    """The hash of a model's `model_inputs`: equal fingerprints, the same model."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def model_inputs(config: Config, spec: ModelSpec, data: TrainingData) -> dict[str, Any]:
    """What a trained model depends on: the live train photos, its recipe, and the pretrained weights
    it starts from (FaceNet's by content, so a moved file is the same model and a new one is not).
    Kept in result.json, so a retraining can say what changed."""
    train = config.train
    recipe = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
              if f.name not in ("build", "description", "local_weights")}
    settings = {
        "data": data.fingerprint, "recipe": recipe, "seed": train.seed,
        "online_augment": spec.online_augment and train.online_augment,
        "holdout_fraction": train.holdout_fraction, "patience": train.patience,
        "holdout": HOLDOUT_METHOD,
    }
    if spec.name == "facenet":
        weights = BuildContext(train=train, models_dir=config.models_dir).facenet_weights_path
        settings.update(facenet_mode=train.facenet_mode,
                        facenet_weights=weights_digest(weights) if storage.exists(weights) else f"missing: {weights}",
                        unknown=[config.evaluate.unknown_far, config.evaluate.unknown_quantile])  # centroids.json
    if spec.name == "resnet50_imagenet":
        settings["imagenet_weights"] = train.imagenet_weights
    return json.loads(json.dumps(settings))  # as result.json will hold it (tuples become lists)


def row_settings_change(out: str, saved: dict[str, Any] | None, now: set[str]) -> str | None:
    """How the preprocessing settings `now` of the live train rows (their fingerprints) differ from
    those `saved` was trained on ("face_margin 0.1 -> 0.2"), or None when they do not (or the saved
    result does not say)."""
    from faceproc.preprocess.settings import describe_settings_change  # MTCNN's and OpenCV's constants

    before = set((saved or {}).get("row_settings") or [])
    return describe_settings_change(out, before, now) if before and before != now else None


def retrain_reason(saved: dict[str, Any] | None, inputs: dict[str, Any], force: bool,
                   settings_change: str | None = None) -> str:
    """Why a model is trained this run, for result.json, the run record and the console; a change of
    the train photos' preprocessing settings (`row_settings_change`) is named as such."""
    if force:
        return "forced (--force)"
    if saved is None or saved.get("status") != Status.OK:
        return "no usable model yet"
    before = saved.get("inputs")
    if not isinstance(before, dict):
        return "trained by an earlier faceproc that did not record its inputs"
    changes = []
    for key in sorted(set(before) | set(inputs)):
        old, new = before.get(key), inputs.get(key)
        if old == new:
            continue
        if key == "data":
            changes.append(f"preprocessing settings changed ({settings_change})" if settings_change
                           else "the live train photos changed")
        elif isinstance(old, dict) and isinstance(new, dict):
            changes += [f"{key}.{k} {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k)]
        else:
            changes.append(f"{key} {old} -> {new}")
    return "; ".join(changes) or "the saved model file is missing"


def train_model(config: Config, name: str, data: TrainingData, where: Placement,
                force: bool = False) -> dict[str, Any]:
    """Fit one model and write its folder; never raises for a model-specific problem."""
    started = time.monotonic()
    artifact = ModelArtifact(config.output, name)
    result: dict[str, Any] = {"model": name, "status": Status.OK, "reason": None, "workers": where.workers,
                              "device": where.device, "in_driver": where.in_driver}
    trained, kept = None, False
    try:
        spec = resolve_spec(name, config.train)
        inputs = model_inputs(config, spec, data)
        fingerprint = inputs_fingerprint(inputs)
        previous = artifact.saved_result()
        frozen_head = name == "facenet" and config.train.facenet_mode == "frozen"
        start = choose_start(frozen_head, previous, artifact.trained_photos() if previous else None, inputs,
                             data.photos, data.classes, force, config.train.warm_start_max_change)
        settings_change = row_settings_change(config.output, previous, settings_of(data.photos))
        because = retrain_reason(previous, inputs, force, settings_change)
        result.update(fingerprint=fingerprint, inputs=inputs, trained_because=because,
                      start="warm" if start.warm else "scratch", start_reason=start.reason)
        recipe = warm_spec(spec, config.train, start.changed_share) if start.warm else spec
        if spec.local_weights is not None and not frozen_head and not (start.warm and where.in_driver):
            # skip or fail on the pretrained weights before saying what training does (a warm start in the
            # driver fine-tunes the current model; FaceNet's embedder checks its file first)
            spec.make(len(data.classes), BuildContext(train=config.train, models_dir=config.models_dir))
        how = (f"fine-tuning the current model for {plural(recipe.epochs, 'epoch')}" if start.warm else
               "refitting the head" if frozen_head else "training from scratch")
        log.info("%s: %s (%s)", name, how, "; ".join(dict.fromkeys([result["trained_because"], start.reason])))
        trained, facts = _fit(config, spec, recipe, data, where, artifact if start.warm else None)
        result.update(facts)
        kept = facts["start_holdout_loss"] is not None and facts["best_epoch"] < 0
        if kept:  # the same weights: the same model version, and nothing to save but the record
            result["start_reason"] = (f"{start.reason}; no epoch beat its holdout loss "
                                      f"{facts['start_holdout_loss']:.3f}, so its weights are kept")
            result.update(kept_weights_facts(previous, facts))
            log.info("%s: %s", name, result["start_reason"])
    except WeightsUnavailable as exc:
        result.update(status=Status.SKIPPED, reason=str(exc))
        for how_it_ran in ("start", "start_reason", "trained_because", "workers", "device", "in_driver"):
            result.pop(how_it_ran, None)  # nothing was trained
    except (WeightsError, UnknownModelError) as exc:
        result.update(status=Status.FAILED, reason=str(exc))
    except Exception as exc:  # a model that breaks must not stop the others
        log.exception("training %s failed", name)
        result.update(status=Status.FAILED, reason=describe(exc))
    result["train_seconds"] = round(time.monotonic() - started, 1)
    result["finished_at_unix"] = round(time.time(), 1)  # when a skipped model may try its weights again
    try:
        if kept:
            artifact.restamp(result, config.to_dict())
        else:
            artifact.save(result, config.to_dict(), trained)
    except Exception as exc:  # a model that cannot be saved is failed; the previous one stays usable
        log.exception("saving %s failed", name)
        result.update(status=Status.FAILED, reason=f"saving the model failed: {describe(exc)}")
        try:
            artifact.save(result, config.to_dict(), None)
        except Exception:  # the storage itself fails: the run record and the console still say so
            log.exception("recording %s's failure failed", name)
    log.info("%s: %s%s (%.0f s)", name, result["status"].value,
             f" - {result['reason']}" if result["reason"] else "", result["train_seconds"])
    return result


WEIGHTS_FACTS = ("epochs_run", "best_epoch", "best_holdout_loss", "base_epochs", "resumed_at_epochs", "epochs",
                 "batch_size", "learning_rate", "optimizer", "fit_photos",
                 "holdout_photos")  # what result.json says of how its weights were fitted


def kept_weights_facts(previous: dict[str, Any], tried: dict[str, Any]) -> dict[str, Any]:
    """A warm start that kept the current weights: result.json goes on describing how those were
    fitted (with history.json, which stays), and keeps the fine-tuning that was tried apart."""
    return {**{key: previous.get(key) for key in WEIGHTS_FACTS},
            "fine_tuning_tried": {key: tried.get(key) for key in WEIGHTS_FACTS if key not in ("base_epochs",)}}


def _fit(config: Config, spec: ModelSpec, recipe: ModelSpec, data: TrainingData, where: Placement,
         warm_from: ModelArtifact | None = None) -> tuple[TrainedFiles, dict[str, Any]]:
    """Train `spec` on `recipe` (the spec itself, or `warm_spec`'s short one when fine-tuning the model
    `warm_from` holds); the files to save and the facts for result.json."""
    context = BuildContext(train=config.train, models_dir=config.models_dir)
    current = None if warm_from is None else warm_from.load(open_set=False).model  # built like `spec` makes it
    in_place = current is not None and where.in_driver  # the driver fine-tunes the loaded model itself
    initial = None if current is None or in_place else current.get_weights()  # workers build their own copy
    num_classes = len(data.classes)
    frozen_facenet = spec.name == "facenet" and context.facenet_mode == "frozen"
    if frozen_facenet:
        from faceproc.models.facenet import attach_head, build_embedding_head
        from faceproc.models.facenet_weights import backbone_fingerprint

        embedder = FaceNetEmbedder(context.facenet_weights_path)  # fails fast on a bad file
        fit, holdout = embedding_datasets(config.output, embedder, context.facenet_weights_path, data,
                                          num_gpus=1.0 if where.use_gpu else 0.0,
                                          driver_max_rows=config.train.driver_decode_max_rows)
        build: Callable[[int], Any] = build_embedding_head
        feature = "embedding"
        fit_count = data.fit_rows  # an embedding per face row
    else:
        build = functools.partial(_same_model, current) if in_place else functools.partial(spec.make, context=context)
        online = spec.online_augment and config.train.online_augment
        # with online augmentation, new variants each epoch stand for the stored copies
        fit, holdout = decoded_faces(config.output, data, originals_only=online, materialize=config.train.materialize,
                                     driver_max_rows=config.train.driver_decode_max_rows)
        fit_count = data.fit_photos if online else data.fit_rows  # one original crop per photo
        feature = "image"

    state, weights = fit_with_ray_train(config, recipe, where, build, num_classes, feature, fit, holdout,
                                        fit_rows=fit_count, initial_weights=initial, warm_start=current is not None)
    head = None
    if frozen_facenet:
        head = build_embedding_head(num_classes)
        head.set_weights(weights)
        model = attach_head(embedder.backbone, head)
    else:
        model = current if current is not None else spec.make(num_classes, context)
        model.set_weights(weights)
    centroids = (train_centroids(config.output, context.facenet_weights_path, config.evaluate.unknown_far,
                                 config.evaluate.unknown_quantile)
                 if frozen_facenet else None)
    warning = threshold_warning(centroids.get("calibration") or {}) if centroids else None
    if warning:
        log.warning("%s: %s", spec.name, warning)
    history, base_epochs = (state.history, 0) if warm_from is None else continued_history(warm_from.history(),
                                                                                          state.history)
    facts = {
        "epochs_run": len(state.history["epoch"]),
        "best_epoch": state.best_epoch + base_epochs if state.best_epoch >= 0 else state.best_epoch,
        "base_epochs": base_epochs if state.best_epoch >= 0 and warm_from is not None else None,  # before it
        "best_holdout_loss": state.best_loss,
        "start_holdout_loss": state.start_loss,  # a warm start: the current model's, the loss to beat
        "resumed_at_epochs": state.resumed_at,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "learning_rate": recipe.learning_rate,
        "optimizer": spec.optimizer,
        "classes": data.classes,
        "fit_photos": data.fit_photos,
        "holdout_photos": data.holdout_photos,
        "row_settings": sorted(settings_of(data.photos)),  # the crop inference must cut
    }
    if frozen_facenet:  # what made the embeddings the head names: identify reuses those another version stored
        facts["embedder"] = backbone_fingerprint(embedder.backbone)
    photos = data.photos if warm_from is None else warm_from.trained_photos()  # the base a warm start kept
    return TrainedFiles(model, data.classes, history, centroids, photos, head), facts


def _same_model(model: Any, num_classes: int) -> Any:
    """`LoopConfig.build` of a warm start in the driver: the current model, not a new one to copy its
    weights into (a ResNet50 build and copy cost about 2 s on two cores)."""
    return model


def warm_spec(spec: ModelSpec, train: TrainConfig, changed_share: float) -> ModelSpec:
    """The fine-tuning recipe: up to `train.warm_start_epochs` epochs in proportion to the change
    (`warm_epochs`), no warm-up and no minimum, from a `train.warm_start_learning_rate` share of the
    recipe's learning rate decaying to 0 (cosine)."""
    epochs = warm_epochs(changed_share, train.warm_start_max_change, train.warm_start_epochs)
    return dataclasses.replace(spec, epochs=epochs, min_epochs=0, warmup_epochs=0, schedule="cosine",
                               learning_rate=spec.learning_rate * train.warm_start_learning_rate)
