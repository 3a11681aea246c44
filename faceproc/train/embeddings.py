"""FaceNet embeddings of face shards, computed once with Ray Data and cached beside the shards.

Shard files never change once published, so the cache is one embeddings file per shard file, under a
folder named after the FaceNet weights' hash: new shards get embedded, old ones are reused.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from faceproc.core import layout, storage
from faceproc.core.images import decode_png
from faceproc.core.shards import (
    LIVE_KEY_COLUMNS,
    keep_live_rows,
    live_key_array,
    live_manifest,
    live_rows,
    live_shard_files,
    numpy_batch,
)
from faceproc.inference.openset import compute_centroids
from faceproc.train.data import Columns, NoTrainingData, TrainingData, driver_columns, split_holdout

EMBEDDING_COLUMNS = ["source_path", "source_sha256", "augment_index", "label"]
SHARD_COLUMN = "path"  # the shard file a row came from (read_parquet's include_paths)
EMBED_BATCH = 32  # faces per FaceNet call


class FaceNetEmbedder:
    """Ray Data callable class: loads the FaceNet backbone once per actor, embeds PNG face crops."""

    def __init__(self, weights_path: str) -> None:
        from faceproc.models.facenet_weights import load_facenet_backbone

        self.backbone = load_facenet_backbone(weights_path)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.stack([decode_png(data) for data in batch["image"]]).astype(np.float32)
        embeddings = self.backbone.predict_on_batch(images)
        out = {name: batch[name] for name in (*EMBEDDING_COLUMNS, SHARD_COLUMN) if name in batch}
        out["embedding"] = np.asarray(embeddings, np.float32)
        return out


def weights_digest(weights_path: str) -> str:
    """SHA-256 of the FaceNet weights, hashed once per process while the file's size and modification
    time stay the same (the model fingerprint and both embedding caches of a run ask for it)."""
    fs, path = storage.resolve(weights_path)
    info = fs.get_file_info(path)
    return _digest(weights_path, info.size, info.mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest(weights_path: str, size: int | None, mtime_ns: int | None) -> str:
    return storage.sha256(weights_path)


def embeddings_dir(out: str, weights_path: str, split: str) -> str:
    return layout.embeddings_dir(out, weights_digest(weights_path)[:16], split)


def ensure_embeddings(out: str, weights_path: str, split: str, num_gpus: float = 0.0,
                      embedder: FaceNetEmbedder | None = None, driver_max_rows: int = 0) -> list[str]:
    """Embed every live shard file of `split` that has no cached embeddings; return all cache files.

    The missing shards go through one Ray Data pipeline (one actor loading FaceNet once), not one
    per shard: each pipeline's actor spends ~12 s importing TensorFlow and loading the weights. When
    the caller has loaded FaceNet already (`embedder`), no GPU is asked for and the missing shards
    hold at most `driver_max_rows` faces (a rerun's few new photos) or no Ray runs (a training that
    needs none, `placement_without_ray`, counted live rows only), they are embedded here instead."""
    cache = embeddings_dir(out, weights_path, split)
    cached = set(storage.list_files(cache, ".parquet"))
    files, missing = [], {}
    for shard in live_shard_files(out, split):
        target = storage.join(cache, shard.rsplit("/", 1)[1])
        files.append(target)
        if target not in cached:
            missing[storage.resolve(shard)[1]] = target
    if missing:
        import ray

        fs, _ = storage.resolve(out)
        here = embedder is not None and not num_gpus and (
            not ray.is_initialized()  # a training that runs without Ray must not start one for its embeddings
            or sum(pq.read_metadata(path, filesystem=fs).num_rows for path in missing) <= driver_max_rows)
        embedded = (_embed_here(embedder, fs, list(missing)) if here
                    else _embed_with_ray(weights_path, fs, list(missing), num_gpus))
        for path, target in missing.items():
            rows = embedded.filter(pc.equal(embedded.column(SHARD_COLUMN), path)) if embedded else None
            if rows is None or rows.num_rows == 0:  # a shard without rows has nothing to cache
                files.remove(target)
                continue
            storage.write_table_atomic(target, rows.drop_columns([SHARD_COLUMN]))
    return files


def _embed_with_ray(weights_path: str, fs: Any, shards: list[str], num_gpus: float) -> pa.Table | None:
    """The embedding rows (with SHARD_COLUMN) of `shards`, from a Ray Data actor that loads FaceNet."""
    import ray
    import ray.data

    refs = (
        ray.data.read_parquet(shards, filesystem=fs, columns=["image", *EMBEDDING_COLUMNS], include_paths=True)
        .map_batches(FaceNetEmbedder, fn_constructor_args=(weights_path,), batch_size=EMBED_BATCH,
                     compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1, num_gpus=num_gpus)
        .to_arrow_refs()
    )
    tables = [table for table in ray.get(refs) if table.num_rows]
    return pa.concat_tables(tables) if tables else None


def _embed_here(embedder: FaceNetEmbedder, fs: Any, shards: list[str]) -> pa.Table | None:
    """The same rows as `_embed_with_ray`, computed in this process by `embedder`."""
    from ray.data.extensions import ArrowTensorArray

    tables = []
    for shard in shards:
        for batch in pq.read_table(shard, filesystem=fs, columns=["image", *EMBEDDING_COLUMNS]).to_batches(EMBED_BATCH):
            rows = embedder({**numpy_batch(batch), SHARD_COLUMN: np.full(batch.num_rows, shard, dtype=object)})
            tables.append(pa.table({name: ArrowTensorArray.from_numpy(values) if name == "embedding" else values
                                    for name, values in rows.items()}))
    return pa.concat_tables(tables) if tables else None


def read_live_embeddings(out: str, files: list[str]) -> Any:
    """A Ray Dataset of cached embedding rows whose source files are still live."""
    import ray.data

    fs, _ = storage.resolve(out)
    dataset = ray.data.read_parquet([storage.resolve(uri)[1] for uri in files], filesystem=fs)
    return keep_live_rows(dataset, live_manifest(out))


def live_embedding_table(out: str, files: list[str]) -> pa.Table:
    """The cached embedding rows whose source files are still live, read in the driver (128 floats
    a row: a few MB for thousands of faces)."""
    keys = live_key_array(live_manifest(out))
    tables = [live_rows(storage.read_table(uri), keys, LIVE_KEY_COLUMNS) for uri in files]
    if not tables:
        raise NoTrainingData(f"no live train embeddings under {out}: run `faceproc preprocess` first")
    return pa.concat_tables(tables)


def embedding_datasets(out: str, embedder: FaceNetEmbedder, weights_path: str, data: TrainingData,
                       num_gpus: float, driver_max_rows: int) -> tuple[Any, Any]:
    """(fit, holdout) of {"embedding", "label" id} for the train faces, split like the images;
    materialized once so the head's many cheap epochs do not re-read Parquet. A split of at most
    `driver_max_rows` rows is read in the driver into `Columns`, like `data.decoded_faces` does, and
    as many new faces are embedded there by `embedder` (the driver's FaceNet)."""
    files = ensure_embeddings(out, weights_path, "train", num_gpus=num_gpus, embedder=embedder,
                              driver_max_rows=driver_max_rows)
    index = {name: i for i, name in enumerate(data.classes)}

    def to_arrays(batch: dict[str, Any]) -> Columns:
        return {"embedding": np.stack(batch["embedding"]).astype(np.float32),
                "label": np.array([index[n] for n in batch["label"]], np.int32)}

    if data.rows <= driver_max_rows:
        return driver_columns(live_embedding_table(out, files), data.held_paths, False, to_arrays)
    fit, holdout = split_holdout(read_live_embeddings(out, files), set(data.held_paths))
    return (fit.map_batches(to_arrays).materialize(),
            holdout.map_batches(to_arrays).materialize() if holdout is not None else None)


def train_centroids(out: str, weights_path: str, unknown_far: float, quantile: float) -> dict[str, Any]:
    """Per-person centroids of the live train embeddings and the distance beyond which a face is
    unknown, calibrated on them (:func:`faceproc.inference.openset.compute_centroids`)."""
    rows = live_embedding_table(out, ensure_embeddings(out, weights_path, "train"))
    embeddings = np.stack(rows["embedding"].to_pylist()).astype(np.float32)
    return compute_centroids(embeddings, rows["label"].to_pylist(), unknown_far, quantile)
