"""`faceproc evaluate`: every trained model predicts every validation face (Ray Data batch inference),
then the predictions, the accuracy table and the report are written under `OUT/reports/`.

For each `OUT/models/<name>/` whose `result.json` says `ok` (and that was trained on rows made with the
preprocessing settings the validation faces now have, and on the people the train split now holds;
otherwise it is `stale`), the live validation faces
(original crops only) go through one `MultiPredictor` that loads every model once (a model this
process has just trained and saved is used as it is in memory, `ModelArtifact.load`), so the faces
are read and decoded once and TensorFlow is imported once: in the driver for up to
`evaluate.driver_max_faces` faces when no GPU is asked for (after training the driver has TensorFlow
loaded, and an actor would spend seconds importing it again; with no Ray joined or named and no GPU,
Ray is not even started), else in one Ray Data actor (1 CPU, or 1 GPU when the cluster has GPUs) from
which only the small prediction rows come back, never the images. When that pass fails, each model
gets a pass of its own, so a model whose loading or inference fails is reported `failed` with a
one-line reason and the others go on.

Outputs, each written atomically:
- `reports/predictions.parquet` (PREDICTION_SCHEMA): one row per (model, validation face).
- `reports/accuracy.{json,csv,md}` (`metrics.accuracy_rows`, `tables.write_accuracy`), with a row
  for every model folder, including those skipped or failed in training; `n_end_to_end` also
  counts the validation photos the manifest lists as rejected.
- `reports/report.html` (`report.page.write_report`) and `reports/config.json` (the config used).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import pyarrow as pa

from faceproc.config import Config, ConfigError, unapplied_setting
from faceproc.core import layout, storage
from faceproc.core.errors import one_line_reason
from faceproc.core.manifest import (
    live_face_rows,
    live_people,
    live_settings,
    load_manifest,
    rejected_count,
    split_files,
)
from faceproc.core.model_names import REFERENCE_ACCURACY, model_order
from faceproc.core.schema import MODEL_INPUT_COLUMNS, Status
from faceproc.core.shards import (
    iter_live_faces,
    live_shard_files,
    numpy_batch,
    original_rows,
    originals,
    read_live_faces,
)
from faceproc.core.text import plural
from faceproc.evaluate.metrics import accuracy_rows, reference_val_photos
from faceproc.evaluate.predictor import PREDICTION_SCHEMA, MultiPredictor
from faceproc.evaluate.tables import write_accuracy
from faceproc.inference.artifact import ModelArtifact, release_saved_models

log = logging.getLogger(__name__)


class EvaluateError(RuntimeError):
    """Evaluation cannot start (no validation shards, no models); the message says what to run."""


def _predict(out: str, names: list[str], config: Config, use_gpu: bool, manifest: pa.Table) -> pa.Table:
    """The named models over the live validation faces: PREDICTION_SCHEMA rows. Up to
    `evaluate.driver_max_faces` faces without a GPU are predicted in this process, which after
    training has TensorFlow loaded already; more go through one Ray Data actor."""
    if not use_gpu and _fits_driver(config, manifest):
        return _predict_here(out, names, config, manifest)
    return _predict_with_ray(out, names, config, use_gpu)


def _fits_driver(config: Config, manifest: pa.Table) -> bool:
    return live_face_rows(manifest, "val") <= config.evaluate.driver_max_faces


def _predict_here(out: str, names: list[str], config: Config, manifest: pa.Table) -> pa.Table:
    """The named models over the live validation faces in this process, `evaluate.batch_size` at a time."""
    predictor = MultiPredictor(out, names)
    tables = []
    for faces in iter_live_faces(out, "val", MODEL_INPUT_COLUMNS, manifest,
                                 batch_size=max(1, config.evaluate.batch_size)):
        faces = original_rows(faces)
        if faces.num_rows:
            tables.append(predictor(numpy_batch(faces)))
    return _predictions(tables)


def _predict_with_ray(out: str, names: list[str], config: Config, use_gpu: bool) -> pa.Table:
    """The named models over the live validation faces, in one Ray Data actor."""
    import ray.data

    faces = read_live_faces(out, "val", MODEL_INPUT_COLUMNS)
    if faces is None:
        raise EvaluateError("the validation shards disappeared while evaluating")
    predictions = originals(faces).map_batches(
        MultiPredictor,
        fn_constructor_args=(out, names),
        batch_size=max(1, config.evaluate.batch_size),
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
        num_gpus=1 if use_gpu else 0,
    )
    return _predictions(list(predictions.iter_batches(batch_format="pyarrow", batch_size=None)))


def _predictions(tables: list[pa.Table]) -> pa.Table:
    tables = [t.select(PREDICTION_SCHEMA.names).cast(PREDICTION_SCHEMA) for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else PREDICTION_SCHEMA.empty_table()


def _predict_each(out: str, names: list[str], config: Config, use_gpu: bool,
                  manifest: pa.Table) -> tuple[list[pa.Table], dict[str, str]]:
    """All models in one pass; when that fails, one pass per model, so that a model that cannot load
    or predict is the only one failed. Returns the prediction tables and {model: failure reason}."""
    try:
        return [_predict(out, names, config, use_gpu, manifest)], {}
    except Exception as exc:  # noqa: BLE001 - which model broke is found below
        if len(names) == 1:
            return [], {names[0]: one_line_reason(exc)}
    tables, failures = [], {}
    for name in names:
        try:
            tables.append(_predict(out, [name], config, use_gpu, manifest))
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
            failures[name] = one_line_reason(exc)
    return tables, failures


def val_people_never_trained(val_files: pa.Table, trained: set[str]) -> dict[str, int]:
    """Validation photos per person (`val_files`, the manifest's rows of the split, rejected ones too)
    whom none of the models (`trained`, the union of their classes) knows: no model can name them, so
    every one counts as an error. Empty when no model is usable, which says so itself."""
    if not trained:
        return {}
    labels = val_files["label"].to_pylist()
    return dict(sorted(Counter(label for label in labels if label and label not in trained).items()))


def stale_reason(out: str, result: dict[str, Any], val_settings: set[str], train_people: set[str]) -> str | None:
    """Why a model is not evaluated on the validation faces as they are now, or None when it can be.

    A model trained on rows made with other preprocessing settings (another margin, alignment off, ...)
    would be scored on crops it never saw, and one trained on other people than the train split now
    holds (`train_people`) cannot name a newcomer and still names someone removed; a model whose
    result.json records neither (an earlier faceproc) is evaluated as before."""
    from faceproc.preprocess.settings import describe_settings_change  # MTCNN's and OpenCV's constants

    retrain = f"not evaluated; `{ModelArtifact(out, result['model']).train_command}` retrains it"
    classes = set(result.get("classes") or [])
    if classes and train_people and classes != train_people:
        change = ", ".join([f"+{person}" for person in sorted(train_people - classes)]
                           + [f"-{person}" for person in sorted(classes - train_people)])
        return f"trained on other people than the train split now holds ({change}): {retrain}"
    trained_on = set(result.get("row_settings") or [])
    if not trained_on or not val_settings or val_settings <= trained_on:
        return None
    change = describe_settings_change(out, trained_on, val_settings)
    return f"trained on other preprocessing settings than the validation faces now hold ({change}): {retrain}"


def adopt_trained_unknown_settings(config: Config, explicit: set[str] = frozenset()) -> None:
    """FaceNet's unknown threshold is chosen when it trains (centroids.json) and evaluation reports it
    as chosen: `config` takes the `evaluate.unknown_*` values it was calibrated with, so the config
    saved beside the report says what produced it. One in `explicit` (the user's) that differs could
    not be applied, so it is refused (ConfigError) rather than recorded."""
    trained_with = dict(zip(("unknown_far", "unknown_quantile"),
                            ModelArtifact(config.output, "facenet").unknown_settings() or []))
    unapplied = unapplied_setting(config.evaluate, "evaluate", trained_with, explicit)
    if unapplied:
        key, wanted, value = unapplied
        raise ConfigError(f"{key}={wanted:g} is not applied by `faceproc evaluate`: facenet's unknown threshold "
                          f"was chosen with {value:g} when it trained; `faceproc train --models facenet` (or "
                          "`faceproc run`) with this setting chooses it again")
    for name, value in trained_with.items():
        setattr(config.evaluate, name, value)


def _failed(result: dict[str, Any], name: str, reason: str) -> dict[str, Any]:
    log.warning("evaluate: %s: evaluation failed: %s", name, reason)
    return {**result, "status": Status.FAILED, "reason": f"evaluation failed: {reason}"}


def run_evaluate(config: Config) -> list[dict[str, Any]]:
    """Predict the validation faces with every trained model; write predictions, accuracy, report.

    Returns the accuracy rows (metrics.ROW_KEYS), in model order. Raises EvaluateError when there
    are no model directories under OUT/models or no published validation shards.
    """
    import ray

    from faceproc.core.ray_env import init_ray, require_on_every_node, starts_cpu_only_here
    from faceproc.evaluate.report.page import write_report

    out = config.output
    names = model_order(storage.list_dirs(layout.models_root(out)))
    if not names:
        raise EvaluateError(f"no trained models under {layout.models_root(out)}: "
                            f"run `faceproc train --output {out}` first")
    manifest = load_manifest(out)  # one snapshot: which faces are predicted and how many were rejected
    if not live_shard_files(out, "val", manifest):
        raise EvaluateError(f"no validation face shards under {layout.shard_dir(out, 'val')}: "
                            f"run `faceproc preprocess --input DIR --output {out}` first")

    if _fits_driver(config, manifest) and starts_cpu_only_here(config.ray_address):
        use_gpu = False  # the driver predicts every face, on the only machine there is: no Ray to start
    else:
        init_ray(config.ray_address)
        require_on_every_node({"output": out})
        use_gpu = float(ray.cluster_resources().get("GPU", 0)) > 0
    val_settings = live_settings(manifest, layout.VAL_SPLIT)
    train_people = live_people(manifest, layout.TRAIN_SPLIT)
    results: dict[str, dict[str, Any]] = {}
    usable: list[str] = []
    labels: set[str] = set()
    open_sets: dict[str, dict[str, Any]] = {}  # the unknown-person operating point of the models with one
    for name in names:
        artifact = ModelArtifact(out, name)
        results[name] = artifact.result()
        if results[name]["status"] != Status.OK:
            continue
        stale = stale_reason(out, results[name], val_settings, train_people)
        if stale:
            log.warning("evaluate: %s: %s", name, stale)
            results[name] = {**results[name], "status": Status.STALE, "reason": stale}
            continue
        try:
            artifact.check_usable()
            labels.update(artifact.classes())
            open_set = artifact.open_set()
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
            results[name] = _failed(results[name], name, one_line_reason(exc))
        else:
            usable.append(name)
            if open_set:
                open_sets[name] = open_set
    val_files = split_files(manifest, layout.VAL_SPLIT)
    unseen = val_people_never_trained(val_files, labels)
    if unseen:
        log.warning("evaluate: validation photos of people no model was trained on, counted as errors: %s",
                    ", ".join(f"{person} ({plural(count, 'photo')})" for person, count in unseen.items()))
    started = time.monotonic()
    try:
        tables, failures = _predict_each(out, usable, config, use_gpu, manifest) if usable else ([], {})
    finally:
        release_saved_models(out)  # what training saved and prediction did not take is not needed again
    for name, reason in failures.items():
        results[name] = _failed(results[name], name, reason)
    done = [name for name in usable if name not in failures]
    if done:
        log.info("evaluate: %s on the validation faces in %.1f s", ", ".join(done), time.monotonic() - started)

    predictions = pa.concat_tables(tables) if tables else PREDICTION_SCHEMA.empty_table()
    if predictions.num_rows:  # model order, then photo: a stable file from run to run
        order = {name: i for i, name in enumerate(names)}
        rank = pa.array([order[m] for m in predictions.column("model").to_pylist()], pa.int32())
        predictions = (
            predictions.append_column("_rank", rank)
            .sort_by([("_rank", "ascending"), ("source_path", "ascending"), ("source_sha256", "ascending")])
            .drop_columns(["_rank"])
        )
    storage.write_table_atomic(layout.report_file(out, layout.PREDICTIONS_FILE), predictions)

    labels.update(predictions.column("label").to_pylist())
    val_photos = [sha or "" for sha in val_files["sha256"].to_pylist()]
    references = REFERENCE_ACCURACY if reference_val_photos(val_photos) else None
    rows = accuracy_rows(predictions, [results[name] for name in names], rejected_count(manifest, "val"),
                         sorted(labels), references)
    for row in rows:
        if row["status"] == Status.OK and row["model"] in open_sets:
            row["open_set"] = open_sets[row["model"]]
    write_accuracy(out, rows)
    write_report(out)
    storage.write_json_atomic(layout.report_file(out, layout.CONFIG_FILE), config.to_dict())
    return rows
