"""What the report shows, read from a run's outputs under OUT (no HTML here).

Face rows come through `iter_live_faces` and rejects through `read_live_rejects`, the live-row logic
evaluation uses, so the rows of a replaced or deleted photo never reach the page. The accuracy table
is `reports/accuracy.json` exactly as evaluation wrote it; the report never recomputes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa

from faceproc.core import layout, storage
from faceproc.core.manifest import load_manifest
from faceproc.core.model_names import model_order
from faceproc.core.rejects import read_live_rejects
from faceproc.core.schema import Status
from faceproc.core.shards import iter_live_faces
from faceproc.inference.artifact import ModelArtifact

T = TypeVar("T")

# The face-row columns the page shows; image bytes are read only for what is shown (images.load_crops).
FACE_COLUMNS = ["label", "source_path", "box", "confidence", "faces_found", "augment_index", "aligned"]


@dataclass
class RunData:
    """Everything the report shows; image bytes are read only when a section asks (`crops`)."""

    out_uri: str
    manifest: pa.Table | None = None  # None when there is none yet or it cannot be read
    rejects: list[dict[str, Any]] | None = None  # live rejects; None without a rejects file or manifest
    val_faces: list[dict[str, Any]] = field(default_factory=list)  # live rows, FACE_COLUMNS
    train_faces: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> result.json
    histories: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> history.json
    calibrations: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> centroids.json "calibration"
    models: list[str] = field(default_factory=list)  # accuracy.json order, then any other model
    predictions: list[dict[str, Any]] | None = None
    accuracy: list[dict[str, Any]] | None = None  # accuracy.json as written; None when missing
    labels: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # files that exist but could not be read
    crops_read: dict[str, dict[tuple[str, int], bytes | None]] = field(default_factory=dict)  # split -> key -> PNG

    def ok_models(self) -> list[str]:
        """The models accuracy.json lists as ok, in order; every model when it lists none."""
        return [str(row["model"]) for row in self.accuracy or [] if row.get("status") == Status.OK] or self.models


def load_run(out_uri: str) -> RunData:
    """Read every output the page shows; a file that is missing stays None, an unreadable one is
    named in `problems` (the page says so) instead of failing the report."""
    data = RunData(out_uri=out_uri)

    def read(uri: str, reader: Callable[[], T]) -> T | None:
        if not storage.exists(uri):
            return None
        try:
            return reader()
        except Exception as exc:  # a corrupt output is reported on the page, not a crash
            data.problems.append(f"{uri}: {type(exc).__name__}: {exc}")
            return None

    data.manifest = manifest = read(layout.manifest(out_uri), lambda: load_manifest(out_uri))
    if manifest is not None:
        data.rejects = read(layout.rejects(out_uri), lambda: read_live_rejects(out_uri, manifest).to_pylist())
        data.val_faces = read(layout.shard_dir(out_uri, "val"), lambda: _live_faces(out_uri, "val", manifest)) or []
        data.train_faces = read(layout.shard_dir(out_uri, "train"),
                                lambda: _live_faces(out_uri, "train", manifest)) or []

    for model in storage.list_dirs(layout.models_root(out_uri)):
        artifact = ModelArtifact(out_uri, model)
        for name, target in ((layout.RESULT_FILE, data.results), (layout.HISTORY_FILE, data.histories)):
            uri = artifact.file(name)
            obj = read(uri, lambda uri=uri: storage.read_json(uri))
            if isinstance(obj, dict):
                target[model] = obj
        uri = artifact.file(layout.CENTROIDS_FILE)
        centroids = read(uri, lambda uri=uri: storage.read_json(uri))
        if isinstance(centroids, dict) and isinstance(centroids.get("calibration"), dict):
            data.calibrations[model] = centroids["calibration"]

    pred_uri = layout.report_file(out_uri, layout.PREDICTIONS_FILE)
    data.predictions = read(pred_uri, lambda: storage.read_table(pred_uri).to_pylist())
    acc_uri = layout.report_file(out_uri, layout.ACCURACY_JSON)
    accuracy = read(acc_uri, lambda: storage.read_json(acc_uri))
    if isinstance(accuracy, list):
        data.accuracy = [row for row in accuracy if isinstance(row, dict)]

    data.labels = _people(data)
    ordered = [str(row.get("model")) for row in data.accuracy or []]
    rest = set(data.results) | set(data.histories) | {str(row["model"]) for row in data.predictions or []}
    data.models = ordered + model_order(rest - set(ordered))
    return data


def _live_faces(out_uri: str, split: str, manifest: pa.Table) -> list[dict[str, Any]]:
    """The live face rows of `split` without image bytes, by person, photo and augmented copy."""
    rows = [row for table in iter_live_faces(out_uri, split, FACE_COLUMNS, manifest, batch_size=1024)
            for row in table.to_pylist()]
    rows.sort(key=lambda r: (str(r["label"]), str(r["source_path"]), r["augment_index"] or 0))
    return rows


def _people(data: RunData) -> list[str]:
    """Every person the faces, the predictions or the accuracy table name: the confusion axes."""
    people = {str(row.get("label")) for row in data.val_faces}
    for row in data.predictions or []:
        people.add(str(row.get("label")))
        people.update(dict(row.get("probabilities") or {}).keys())
    for row in data.accuracy or []:
        people.update((row.get("per_class") or {}).keys())
    people.discard("None")
    return sorted(people)
