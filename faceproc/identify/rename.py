"""Naming stored faces again: what a new model version costs when it cuts faces as the last one did.

Every identity row keeps the crop the model saw (PNG, lossless). When a retrained model was trained on
rows cut with the same crop settings (`crop_settings.crop_fingerprint`), it is given the very crops it
would cut, so the photo is not read, decoded or detected again: its live rows are read back from the
identity shards and classified by the new version. A frozen FaceNet's retraining refits only its head,
so a face whose row holds the embedding the same FaceNet weights made is named by the head alone; the
backbone runs only on the crops of faces without one (rows of an earlier faceproc, another backbone).

`RenameFaces` is the Ray Data callable class that does it, in the driver for a few photos and on an
actor pool for more, with the limit that decides it for reading photos (`commit.runs_in_driver`):
FaceNet on stored crops costs about as much as the detection it saves (docs/benchmarks.md, "Identify
after a retrain").
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faceproc.config import PreprocessConfig
from faceproc.core import layout, storage
from faceproc.core.commit import runs_in_driver, write_staged_rows
from faceproc.core.images import decode_png
from faceproc.core.schema import IDENTITY_SCHEMA
from faceproc.core.shards import iter_live_rows, live_files, live_key_array, live_rows
from faceproc.core.text import plural
from faceproc.identify.rows import KEY_COLUMNS, embedding_columns
from faceproc.inference.artifact import TrainedModel

FACES_PER_CALL = 32  # stored crops per model call: FaceNet's activations for 256 crops took the driver past 2 GB


class RenameFaces:
    """Identity rows in, those of the photos named by `keys` (`path\\0sha256\\0run_id` of their
    manifest rows) out, named by `model`'s `version`: an actor can take the shard files as they are.
    A face whose stored embedding the model's backbone would make again (`ModelArtifact.embedder`) is
    named by the head alone (`load_head`); the whole model is loaded only for a face without one, which
    is named from its stored crop and keeps the new embedding."""

    def __init__(self, out: str, model: str, version: str, run_id: str, keys: pa.Array, tf_threads: int = 0) -> None:
        from faceproc.inference.artifact import ModelArtifact
        from faceproc.preprocess.detector import limit_tf_threads

        limit_tf_threads(tf_threads)
        self.artifact = ModelArtifact(out, model)
        self.embedder = self.artifact.embedder()
        self.head = self.artifact.load_head() if self.embedder else None
        self.whole_model: TrainedModel | None = None  # loaded for the first face without a reusable embedding
        self.model, self.version, self.run_id, self.keys = model, version, run_id, keys

    def __call__(self, rows: pa.Table) -> pa.Table:
        rows = live_rows(rows, self.keys, KEY_COLUMNS)
        reuse = reusable_embeddings(rows, self.embedder)
        verdicts: list[dict[str, Any]] = [{} for _ in range(rows.num_rows)]
        embeddings, embedders = rows["embedding"].to_pylist(), rows["embedder"].to_pylist()
        stored, cut = np.flatnonzero(reuse), np.flatnonzero(~reuse)
        if stored.size:
            named = self.head.classify(np.array([embeddings[i] for i in stored], np.float32))
            for i, verdict in zip(stored, named):
                verdicts[i] = verdict
        if cut.size:
            if self.whole_model is None:
                self.whole_model = self.artifact.load()
            crops = [decode_png(face) for face in rows["face"].take(cut).to_pylist()]
            for i, verdict in zip(cut, self.whole_model.classify(crops, with_embeddings=True)):
                verdicts[i] = verdict
                if "embedding" in verdict:  # a model without FaceNet leaves a face's stored embedding as it was
                    columns = embedding_columns(verdict["embedding"], self.embedder)
                    embeddings[i], embedders[i] = columns["embedding"], columns["embedder"]
        named = {
            "person": pa.array([v["person"] for v in verdicts], pa.string()),
            "probability": pa.array([float(v["probability"]) for v in verdicts], pa.float32()),
            "distance": pa.array([v.get("distance") for v in verdicts], pa.float32()),
            "embedding": pa.array(embeddings, pa.list_(pa.float32())),
            "embedder": pa.array(embedders, pa.string()),
            "model": pa.array([self.model] * rows.num_rows, pa.string()),
            "model_version": pa.array([self.version] * rows.num_rows, pa.string()),
            "run_id": pa.array([self.run_id] * rows.num_rows, pa.string()),
        }
        for name, column in named.items():
            rows = rows.set_column(rows.schema.get_field_index(name), name, column)
        return rows.select(IDENTITY_SCHEMA.names).cast(IDENTITY_SCHEMA)


def reusable_embeddings(rows: pa.Table, embedder: str | None) -> np.ndarray:
    """Which of `rows` hold an embedding that `embedder` made (none when it is None): their faces are
    named without the backbone."""
    if embedder is None or not rows.num_rows:
        return np.zeros(rows.num_rows, bool)
    same = pc.and_(pc.equal(rows["embedder"], embedder), pc.is_valid(rows["embedding"]))
    return pc.fill_null(same, False).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class StoredFaces:
    """What the identity shards hold of some photos: live rows per photo, and how many of them have
    an embedding the current model's head names (`reusable_embeddings`)."""

    per_photo: dict[str, int]
    embedded_per_photo: dict[str, int]

    def needs_backbone(self, photo: str) -> bool:
        """Whether a face of `photo` must go through the whole model (no reusable embedding)."""
        return self.embedded_per_photo.get(photo, 0) < self.per_photo.get(photo, 0)


def stored_faces(root: str, photos: pa.Table, embedder: str | None) -> StoredFaces:
    """The live identity rows of `photos` (identities manifest rows) in the shards, reading only the
    columns that say whose they are and whether their embedding is reusable, so that a photo short of
    a face (a shard file lost) can be read instead."""
    keys = live_key_array(photos, with_run=True)
    files = live_files(layout.identity_shards(root), photos)
    counts: collections.Counter[str] = collections.Counter()
    embedded: collections.Counter[str] = collections.Counter()
    columns = ["photo_path", "embedder", "embedding"] if embedder else ["photo_path"]
    for rows in iter_live_rows(files, keys, KEY_COLUMNS, columns, IDENTITY_SCHEMA, 8192):
        paths = rows["photo_path"].to_pylist()
        counts.update(paths)
        embedded.update(path for path, reused in zip(paths, reusable_embeddings(rows, embedder)) if reused)
    return StoredFaces(dict(counts), dict(embedded))


def stage_renames(photos: pa.Table, backbone_photos: int, root: str, prep: PreprocessConfig, renamed_dir: str,
                  ray_address: str | None, shared_paths: Mapping[str, str], *, out: str, model: str, version: str,
                  run_id: str) -> str:
    """Name the stored faces of `photos` (identities manifest rows) again with OUT's `model`, which is
    at `version`, as run `run_id`, staging the rows under `renamed_dir`. Returns where it ran: in the
    driver when the photos whose faces need FaceNet (`backbone_photos`) are few enough for it, which
    they always are when every face has a reusable embedding (the head alone is cheap)."""
    keys = live_key_array(photos, with_run=True)
    files = live_files(layout.identity_shards(root), photos)
    args = (out, model, version, run_id, keys)
    storage.makedirs(renamed_dir)
    if runs_in_driver(backbone_photos, prep, ray_address, shared_paths):
        rename = RenameFaces(*args)
        named: list[pa.Table] = []  # about a shard's worth: the driver holds no more of the renamed rows
        for rows in iter_live_rows(files, keys, KEY_COLUMNS, IDENTITY_SCHEMA.names, IDENTITY_SCHEMA, FACES_PER_CALL):
            named.append(rename(rows))  # on this thread: TensorFlow must not start on one of pyarrow's writers
            if sum(table.num_rows for table in named) >= prep.rows_per_shard:
                table = pa.concat_tables(named)
                whole = table.num_rows - table.num_rows % prep.rows_per_shard  # full shards only
                write_staged_rows(table.slice(0, whole), renamed_dir, prep.rows_per_shard)
                named = [table.slice(whole)]
        write_staged_rows(pa.concat_tables(named) if named else IDENTITY_SCHEMA.empty_table(), renamed_dir,
                          prep.rows_per_shard)
        return "the driver"
    import ray.data as data

    fs, _ = storage.resolve(root)
    out_fs, out_path = storage.resolve(renamed_dir)
    actors = max(1, min(prep.detector_actors, len(files)))
    (
        data.read_parquet([storage.resolve(uri)[1] for uri in files], filesystem=fs, columns=IDENTITY_SCHEMA.names,
                          schema=IDENTITY_SCHEMA)  # shards of an earlier faceproc lack the embedding columns
        .map_batches(RenameFaces, fn_constructor_args=(*args, prep.detector_threads), batch_size=FACES_PER_CALL,
                     batch_format="pyarrow", compute=data.ActorPoolStrategy(size=actors),
                     num_cpus=prep.detector_num_cpus, num_gpus=prep.detector_num_gpus)
        .write_parquet(out_path, filesystem=out_fs, max_rows_per_file=prep.rows_per_shard)
    )
    return f"a Ray Data pool of {plural(actors, 'actor')}"
