"""The train split ready for Keras, as Ray Datasets or the driver's numpy columns: the early-stopping
holdout carved out by source photo, PNGs decoded, labels as ids.

A small split (`train.driver_decode_max_rows`) is read and decoded in the driver into numpy columns
(handed to Ray as materialized blocks when workers train): each Ray Data pass costs 2-4 s of start-up
on two cores, more than reading and decoding a few hundred faces. A bigger one is read and decoded
by Ray Data, never in the driver.

The holdout is whole source photos, seeded, stratified by person: all augmented copies of a photo
stay on the same side, so it never sees a rotated twin of a training image. The `val` split is not
touched here: it is the evaluation job's test set.
"""

from __future__ import annotations

import collections
import functools
import hashlib
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faceproc.core.images import decode_png
from faceproc.core.manifest import load_manifest
from faceproc.core.schema import MODEL_INPUT_COLUMNS
from faceproc.core.shards import iter_live_faces, original_rows, originals, read_live_faces
from faceproc.train.warm_start import PHOTO_COLUMNS


class NoTrainingData(RuntimeError):
    """The output holds no usable train shards; the message says what to run."""


def decode_faces(batch: dict[str, np.ndarray], classes: list[str]) -> dict[str, np.ndarray]:
    """Batch of shard rows -> {"image": uint8 (n,160,160,3), "label": int32 class ids}.

    uint8 keeps a materialized dataset at a quarter of float32's size; Keras casts to the model's
    float32 input itself."""
    index = {name: i for i, name in enumerate(classes)}
    return {
        "image": np.stack([decode_png(data) for data in batch["image"]]),
        "label": np.array([index[name] for name in batch["label"]], np.int32),
    }


BLOCK_ROWS = 64  # rows per block of a split decoded in the driver: blocks to share among workers

HOLDOUT_METHOD = "hash-rank"  # how `select_holdout` picks: a model's inputs, so a change retrains from scratch


def select_holdout(photos: Iterable[tuple[str, str]], fraction: float, seed: int) -> set[str]:
    """Source paths to hold out from (path, person) pairs: round(fraction * n) per person, and at
    least one photo of every person who has two or more, so every class is checked.

    Each person's photos are ranked by a seeded hash of their path and the first ones held out, so a
    new photo moves at most one other across: a warm start (`warm_start`) then finds next to no
    photo it was fitted on in its holdout, where a fresh draw would reshuffle the whole holdout."""
    by_person: dict[str, list[str]] = collections.defaultdict(list)
    for path, person in photos:
        by_person[person].append(path)
    held: set[str] = set()
    for person in sorted(by_person):
        paths = sorted(set(by_person[person]))
        if fraction <= 0 or len(paths) < 2:
            continue
        count = min(len(paths) - 1, max(1, round(fraction * len(paths))))
        ranked = sorted(paths, key=lambda path: hashlib.sha256(f"{seed}:{path}".encode()).digest())
        held.update(ranked[:count])
    return held


def split_holdout(rows: Any, held: AbstractSet[str]) -> tuple[Any, Any]:
    """(fitting rows, holdout rows): whole source photos apart; the holdout keeps originals only."""
    from ray.data.expressions import col

    held_paths = sorted(held)
    fit = rows.filter(expr=~col("source_path").is_in(held_paths)) if held else rows
    holdout = originals(rows.filter(expr=col("source_path").is_in(held_paths))) if held else None
    return fit, holdout


def split_table(rows: pa.Table, held: AbstractSet[str], originals_only: bool) -> tuple[pa.Table, pa.Table | None]:
    """`split_holdout` on an Arrow table in the driver, fitting rows reduced to originals with
    `originals_only`. The order never depends on the files': sorted by source photo and copy, then
    shuffled with a fixed seed, so that no block (nor a worker's share of blocks) holds one person."""
    rows = rows.sort_by([("source_path", "ascending"), ("augment_index", "ascending")])
    rows = rows.take(np.random.default_rng(0).permutation(rows.num_rows))
    in_holdout = pc.is_in(rows["source_path"], value_set=pa.array(sorted(held), pa.string()))
    fit = rows.filter(pc.invert(in_holdout))
    holdout = original_rows(rows.filter(in_holdout)) if held else None
    return (original_rows(fit) if originals_only else fit), holdout


Columns = dict[str, np.ndarray]  # a split read in the driver: equal-length numpy columns, images n-dimensional


def driver_columns(rows: pa.Table, held: AbstractSet[str], originals_only: bool,
                   to_arrays: Callable[[dict[str, list]], Columns]) -> tuple[Columns, Columns | None]:
    """(fit, holdout) of a split read in the driver: `split_table`, then each part's columns through
    `to_arrays` (PNGs decoded, labels as ids, ...). The trainer feeds the driver's own loop from them,
    or puts them in Ray's object store for workers (`object_store_dataset`)."""
    fit, holdout = split_table(rows, held, originals_only)
    return to_arrays(fit.to_pydict()), None if holdout is None else to_arrays(holdout.to_pydict())


def object_store_dataset(columns: Columns) -> Any:
    """Equal-length numpy columns (images may be n-dimensional) as a MaterializedDataset of
    BLOCK_ROWS-row blocks, put in Ray's object store from the driver."""
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    rows = len(next(iter(columns.values())))
    blocks = [pa.table({name: (ArrowTensorArray.from_numpy(values[start:start + BLOCK_ROWS]) if values.ndim > 1
                               else pa.array(values[start:start + BLOCK_ROWS]))
                        for name, values in columns.items()})
              for start in range(0, rows, BLOCK_ROWS)]
    return ray.data.from_arrow(blocks)


@dataclass
class TrainingData:
    """The train split divided by source photo into a fitting part and an early-stopping holdout.

    All of it comes from the manifest, so deciding that a model is up to date needs neither Ray nor
    the shards; `decoded_faces` and `embeddings.embedding_datasets` read the rows when a model trains."""

    classes: list[str]
    fit_photos: int
    holdout_photos: int
    held_paths: frozenset[str]
    fingerprint: str  # changes whenever the live train photos or the settings of their rows change
    fit_rows: int  # face rows of the fitting photos (originals and stored copies), from the manifest
    photos: pa.Table  # the live train photos: path, sha256, settings (warm_start.PHOTO_COLUMNS)
    rows: int  # face rows of all live train photos, from the manifest


def load_training_data(out: str, holdout_fraction: float, seed: int) -> TrainingData:
    """The train photos, holdout and fingerprint from OUT's manifest (no Ray, no shard read)."""
    manifest = load_manifest(out, columns=["split", "status", "label", "face_rows", *PHOTO_COLUMNS])
    ok_train = manifest.filter(pc.and_(pc.equal(manifest.column("status"), "ok"),
                                       pc.equal(manifest.column("split"), "train")))
    if ok_train.num_rows == 0:
        raise NoTrainingData(f"no train face shards under {out}: run `faceproc preprocess --input DIR "
                             f"--output {out}` first")
    photos = list(zip(ok_train.column("path").to_pylist(), ok_train.column("label").to_pylist()))
    classes = sorted({label for _, label in photos})
    if len(classes) < 2:
        raise NoTrainingData(f"the train split under {out} has {len(classes)} person(s); need at least 2")
    held = select_holdout(photos, holdout_fraction, seed)
    digest = hashlib.sha256()
    rows = zip(*(ok_train.column(name).to_pylist() for name in ("path", "sha256", "settings")))
    for path, sha, settings in sorted(rows, key=lambda row: row[0]):  # the photos and how their rows were made
        digest.update(f"{path}\0{sha}\0{settings}\n".encode())
    fit_rows = sum(n for path, n in zip(ok_train.column("path").to_pylist(), ok_train.column("face_rows").to_pylist())
                   if path not in held)
    return TrainingData(classes, len(photos) - len(held), len(held), frozenset(held),
                        digest.hexdigest(), fit_rows, ok_train.select(PHOTO_COLUMNS),
                        sum(ok_train.column("face_rows").to_pylist()))


def decoded_faces(out: str, data: TrainingData, originals_only: bool, materialize: bool,
                  driver_max_rows: int) -> tuple[Any, Any | None]:
    """(fit, holdout) of {"image", "label"} ready for a model: `Columns` decoded in the driver when
    the split has at most `driver_max_rows` face rows, else Ray Datasets decoded by Ray Data (with
    `materialize`, once into the object store instead of every epoch)."""
    if data.rows <= driver_max_rows:
        tables = list(iter_live_faces(out, "train", MODEL_INPUT_COLUMNS))
        if not tables:
            raise NoTrainingData(f"no live train face rows under {out}: run `faceproc preprocess` first")
        return driver_columns(pa.concat_tables(tables), data.held_paths, originals_only,
                              functools.partial(decode_faces, classes=data.classes))
    live = read_live_faces(out, "train", MODEL_INPUT_COLUMNS)
    if live is None:
        raise NoTrainingData(f"no train face shards under {out}: run `faceproc preprocess --input DIR "
                             f"--output {out}` first")
    fit, holdout = split_holdout(live, data.held_paths)

    def decoded(rows: Any) -> Any:
        faces = rows.map_batches(decode_faces, fn_kwargs={"classes": data.classes}, batch_size=32)
        return faces.materialize() if materialize else faces

    return decoded(originals(fit) if originals_only else fit), None if holdout is None else decoded(holdout)
