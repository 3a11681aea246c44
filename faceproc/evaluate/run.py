"""`faceproc evaluate`: every trained model predicts every validation face (Ray Data batch inference),
then the predictions, the accuracy table and the report are written under `OUT/reports/`.

For each `OUT/models/<name>/` whose `result.json` says `ok`, the live validation faces
(`shards.read_live_faces(out, "val")`, original crops only) stream through one `Predictor` actor
(1 CPU, or 1 GPU when the cluster has GPUs), which loads the model once. Only the small prediction
rows come back to the driver, never the images. Models are evaluated one after another; a model
whose loading or inference fails is reported `failed` with a one-line reason and the others go on.

Outputs, each written atomically:
- `reports/predictions.parquet` (PREDICTION_SCHEMA): one row per (model, validation face).
  `predicted` is the softmax argmax (no "unknown" here: validation people are all known), and
  `probabilities` maps every class of the model to its probability.
- `reports/accuracy.{json,csv,md}` via `metrics.accuracy_rows` / `metrics.write_accuracy`, with a
  row for every model directory, including those skipped or failed in training; `n_end_to_end`
  counts the validation photos the manifest lists as rejected.
- `reports/report.html` via `report.write_report`, and `reports/config.json` (the config used).
"""

from __future__ import annotations

import logging
import re
import time
import zipfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faceproc.evaluate import metrics
from faceproc.core import storage
from faceproc.config import ALL_MODELS, Config
from faceproc.inference.predict import (
    CLASSES_FILE,
    MODEL_FILE,
    RESULT_FILE,
    PredictError,
    check_outputs,
    fit_to_input,
    input_size,
    load_keras_model,
    read_classes,
)

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "reports/predictions.parquet"
CONFIG_FILE = "reports/config.json"
FACE_COLUMNS = ["image", "label", "source_path", "source_sha256", "augment_index"]
MAX_REASON = 300

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("model", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("source_sha256", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("predicted", pa.string(), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),
        pa.field("probabilities", pa.map_(pa.string(), pa.float32()), nullable=False),
    ]
)
# What a Predictor returns (everything but `model`, which the driver adds).
PREDICTOR_SCHEMA = pa.schema([f for f in PREDICTION_SCHEMA if f.name != "model"])


class EvaluateError(RuntimeError):
    """Evaluation cannot start (no validation shards, no models); the message says what to run."""


class Predictor:
    """Ray Data callable class: PNG face crops in, one prediction row per crop out.

    `__init__` loads the `.keras` model once per actor (a remote URI is copied to a local temp
    file first) and its `classes.json` (next to the model unless `classes` is given). `__call__`
    takes a batch with `image` (PNG bytes), `label`, `source_path`, `source_sha256` and returns an
    Arrow table with PREDICTOR_SCHEMA: source_path, source_sha256, label, predicted, confidence,
    probabilities ({class: probability}).
    """

    def __init__(self, model_uri: str, classes: list[str] | None = None) -> None:
        self.model_uri = model_uri
        if classes is None:
            classes = read_classes(model_uri.rsplit("/", 1)[0] + "/" + CLASSES_FILE)
        self.classes = list(classes)
        try:
            self.model = load_keras_model(model_uri)
        except Exception as exc:
            raise PredictError(f"cannot load {model_uri}: {type(exc).__name__}: {_first_line(str(exc))}") from exc
        check_outputs(self.model, self.classes, model_uri)
        self.size = input_size(self.model)
        self._keys = pa.array(self.classes, pa.string())

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        import cv2

        images = batch["image"]
        n = len(images)
        if n == 0:
            return PREDICTOR_SCHEMA.empty_table()
        faces = []
        for png, path in zip(images, batch["source_path"]):
            bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"the face crop of {path} is not a decodable image")
            faces.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        x = fit_to_input(faces, self.size)
        probs = np.asarray(self.model(x, training=False), dtype=np.float32)
        best = probs.argmax(axis=1)
        k = len(self.classes)
        probabilities = pa.MapArray.from_arrays(
            pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32)),
            pa.concat_arrays([self._keys] * n),
            pa.array(probs.reshape(-1), pa.float32()),
        )
        return pa.Table.from_arrays(
            [
                pa.array([str(p) for p in batch["source_path"]], pa.string()),
                pa.array([str(s) for s in batch["source_sha256"]], pa.string()),
                pa.array([str(label) for label in batch["label"]], pa.string()),
                pa.array([self.classes[j] for j in best], pa.string()),
                pa.array(probs[np.arange(n), best], pa.float32()),
                probabilities,
            ],
            schema=PREDICTOR_SCHEMA,
        )


# --------------------------------------------------------------------------------------------


def model_order(names) -> list[str]:
    """cnn, resnet50, resnet50_imagenet, facenet, then any other names sorted."""
    names = set(names)
    return [m for m in ALL_MODELS if m in names] + sorted(names - set(ALL_MODELS))


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0].strip() if text else ""


_EXC_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::\s*(.*))?$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _is_ray(exc_or_name: BaseException | str) -> bool:
    name = exc_or_name if isinstance(exc_or_name, str) else type(exc_or_name).__module__ + "."
    return name.startswith("ray.")


def one_line_reason(exc: BaseException) -> str:
    """A one-line "Type: message" for an exception, digging the user's error out of Ray's wrappers.

    The deepest non-Ray exception of the cause chain wins; when Ray only hands back its own
    wrappers (an actor that died in `__init__`), the last "SomeError: message" line of the remote
    traceback they carry is used.
    """
    chain, seen = [exc], {id(exc)}
    while True:
        cause = getattr(chain[-1], "cause", None)
        nxt = cause if isinstance(cause, BaseException) else chain[-1].__cause__
        if nxt is None or id(nxt) in seen:
            break
        seen.add(id(nxt))
        chain.append(nxt)
    ours = [e for e in chain if not _is_ray(e)]
    last = ours[-1] if ours else chain[-1]
    name, message = f"{type(last).__module__}.{type(last).__name__}", _first_line(str(last))
    if not ours:
        found = None
        for wrapper in chain:
            for line in _ANSI.sub("", str(wrapper)).splitlines():
                match = _EXC_LINE.match(line)
                if match and not (found and _is_ray(match.group(1)) and not _is_ray(found[0])):
                    found = (match.group(1), (match.group(2) or "").strip())
        if found:
            name, message = found
    if name.startswith("faceproc.") and message:
        return _truncate(message)  # our own errors say what is wrong in full sentences
    name = name.rsplit(".", 1)[-1]
    return _truncate(f"{name}: {message}" if message else name)


def _truncate(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


def _read_result(out: str, name: str) -> dict[str, Any]:
    uri = storage.join(out, "models", name, RESULT_FILE)
    if not storage.exists(uri):
        return {"model": name, "status": "failed",
                "reason": f"models/{name}/{RESULT_FILE} is missing (training did not finish): run `faceproc train`"}
    try:
        result = storage.read_json(uri)
    except (OSError, ValueError) as exc:
        return {"model": name, "status": "failed", "reason": f"models/{name}/{RESULT_FILE} cannot be read: {exc}"}
    if not isinstance(result, dict):
        return {"model": name, "status": "failed", "reason": f"models/{name}/{RESULT_FILE} is not a JSON object"}
    return {**result, "model": name, "status": str(result.get("status") or "failed")}


def _failed(result: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**result, "status": "failed", "reason": reason}


def check_archive(out: str, name: str) -> None:
    """Fail early, with a clear message, when `models/<name>/model.keras` is missing or not a
    `.keras` archive (reads only the zip directory, also on remote storage)."""
    rel = f"models/{name}/{MODEL_FILE}"
    fs, path = storage.resolve(storage.join(out, "models", name, MODEL_FILE))
    try:
        with fs.open_input_file(path) as stream, zipfile.ZipFile(stream) as archive:
            members = set(archive.namelist())
    except FileNotFoundError:
        raise PredictError(f"{rel} is missing: run `faceproc train` again") from None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise PredictError(f"{rel} is not a readable .keras archive ({type(exc).__name__}: {exc})") from None
    if "config.json" not in members:
        raise PredictError(f"{rel} is not a .keras archive (no config.json inside)")


def val_rejects(out: str) -> int:
    """Validation photos the published manifest lists as rejected."""
    from faceproc.core.manifest import load_manifest

    manifest = load_manifest(out)
    mask = pc.and_(pc.equal(manifest.column("status"), "rejected"), pc.equal(manifest.column("split"), "val"))
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)


def _originals(faces):
    """Only original crops (augment_index 0); validation has no augmented rows today anyway."""
    try:
        from ray.data.expressions import col
    except ImportError:  # older Ray Data: a row function
        return faces.filter(lambda row: int(row["augment_index"]) == 0)
    return faces.filter(expr=col("augment_index") == 0)


def _predict_model(out: str, name: str, classes: list[str], config: Config, use_gpu: bool) -> pa.Table:
    """One model over the live validation faces; the prediction rows with a `model` column."""
    import ray.data

    from faceproc.core.shards import read_live_faces

    model_uri = storage.join(out, "models", name, MODEL_FILE)
    faces = read_live_faces(out, "val", FACE_COLUMNS)
    if faces is None:
        raise EvaluateError("the validation shards disappeared while evaluating")
    predictions = _originals(faces).map_batches(
        Predictor,
        fn_constructor_args=(model_uri,),
        fn_constructor_kwargs={"classes": classes},
        batch_size=max(1, config.evaluate.batch_size),
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=1,
        num_gpus=1 if use_gpu else 0,
    )
    tables = [t for t in predictions.iter_batches(batch_format="pyarrow", batch_size=None) if t.num_rows]
    table = pa.concat_tables([t.select(PREDICTOR_SCHEMA.names).cast(PREDICTOR_SCHEMA) for t in tables]) \
        if tables else PREDICTOR_SCHEMA.empty_table()
    return table.add_column(0, "model", pa.array([name] * table.num_rows, pa.string())).cast(PREDICTION_SCHEMA)


def run_evaluate(config: Config) -> list[dict[str, Any]]:
    """Predict the validation faces with every trained model; write predictions, accuracy, report.

    Returns the accuracy rows (metrics.ROW_KEYS), in model order. Raises EvaluateError when there
    are no model directories under OUT/models or no published validation shards.
    """
    import ray

    from faceproc.evaluate import report
    from faceproc.core.ray_env import init_ray
    from faceproc.core.shards import live_shard_files

    out = config.output
    names = model_order(storage.list_dirs(storage.join(out, "models")))
    if not names:
        raise EvaluateError(f"no trained models under {storage.join(out, 'models')}: "
                            f"run `faceproc train --output {out}` first")
    if not live_shard_files(out, "val"):
        raise EvaluateError(f"no validation face shards under {storage.join(out, 'shards', 'val')}: "
                            f"run `faceproc preprocess --input DIR --output {out}` first")

    init_ray(config.ray_address)
    use_gpu = float(ray.cluster_resources().get("GPU", 0)) > 0
    results: list[dict[str, Any]] = []
    tables: list[pa.Table] = []
    labels: set[str] = set()
    for name in names:
        result = _read_result(out, name)
        if result["status"] == "ok":
            started = time.monotonic()
            try:
                check_archive(out, name)
                classes = read_classes(storage.join(out, "models", name, CLASSES_FILE))
                table = _predict_model(out, name, classes, config, use_gpu)
            except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the others
                reason = f"evaluation failed: {one_line_reason(exc)}"
                log.warning("evaluate: %s: %s", name, reason)
                result = _failed(result, reason)
            else:
                tables.append(table)
                labels.update(classes)
                log.info("evaluate: %s: %d faces in %.1f s", name, table.num_rows, time.monotonic() - started)
        results.append(result)

    predictions = pa.concat_tables(tables) if tables else PREDICTION_SCHEMA.empty_table()
    if predictions.num_rows:  # model order, then photo: a stable file from run to run
        order = {name: i for i, name in enumerate(names)}
        rank = pa.array([order[m] for m in predictions.column("model").to_pylist()], pa.int32())
        predictions = (
            predictions.append_column("_rank", rank)
            .sort_by([("_rank", "ascending"), ("source_path", "ascending"), ("source_sha256", "ascending")])
            .drop_columns(["_rank"])
        )
    storage.write_table_atomic(storage.join(out, PREDICTIONS_FILE), predictions)

    labels.update(predictions.column("label").to_pylist())
    rows = metrics.accuracy_rows(predictions, results, val_rejects(out), sorted(labels))
    metrics.write_accuracy(out, rows)
    report.write_report(out)
    storage.write_json_atomic(storage.join(out, CONFIG_FILE), config.to_dict())
    return rows
