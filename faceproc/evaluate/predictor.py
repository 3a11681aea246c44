"""The Ray Data callable class of evaluation (the driver calls it too, for a few faces): PNG face crops
in, one prediction row per crop out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from faceproc.core.images import decode_png
from faceproc.inference.artifact import ModelArtifact

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
# What a Predictor returns for one model (everything but `model`).
PREDICTOR_SCHEMA = pa.schema([f for f in PREDICTION_SCHEMA if f.name != "model"])


class Predictor:
    """One model's artifact, loaded once (`__init__`); `predict` takes a batch with `label`,
    `source_path`, `source_sha256` and its decoded faces and returns an Arrow table with
    PREDICTOR_SCHEMA: source_path, source_sha256, label, predicted (the softmax argmax: no
    "unknown", validation people are all known), confidence, probabilities ({class: probability}).
    """

    def __init__(self, out: str, name: str) -> None:
        self.model = ModelArtifact(out, name).load(open_set=False)
        self.classes = self.model.classes
        self._keys = pa.array(self.classes, pa.string())

    def predict(self, batch: dict[str, np.ndarray], faces: list[np.ndarray]) -> pa.Table:
        """The rows for `batch` given its `image` column already decoded as `faces`."""
        n = len(faces)
        if n == 0:
            return PREDICTOR_SCHEMA.empty_table()
        probs = self.model.probabilities(faces)
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


class MultiPredictor:
    """Every named model in one actor: the validation faces are read and decoded once, and the actor
    imports TensorFlow once (each Ray Data actor pool costs several seconds before its first batch).
    Returns PREDICTION_SCHEMA rows, one per (model, face)."""

    def __init__(self, out: str, names: list[str]) -> None:
        self.predictors = {name: Predictor(out, name) for name in names}

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        faces = [decode_png(png) for png in batch["image"]]
        tables = []
        for name, predictor in self.predictors.items():
            table = predictor.predict(batch, faces)
            tables.append(table.add_column(0, "model", pa.array([name] * table.num_rows, pa.string())))
        return pa.concat_tables(tables).cast(PREDICTION_SCHEMA)
