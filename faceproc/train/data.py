"""Face shards as Ray Datasets ready for Keras: PNGs decoded in the data pipeline, labels as ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from faceproc.core.images import decode_png
from faceproc.train.holdout import select_holdout
from faceproc.core.manifest import load_manifest
from faceproc.core.shards import read_live_faces

FACE_COLUMNS = ["image", "label", "source_path", "source_sha256", "augment_index"]


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


def split_holdout(rows, held: set[str]):
    """(fitting rows, holdout rows): whole source photos apart; the holdout keeps originals only."""
    from ray.data.expressions import col

    held_paths = sorted(held)
    fit = rows.filter(expr=~col("source_path").is_in(held_paths)) if held else rows
    holdout = (rows.filter(expr=col("source_path").is_in(held_paths) & (col("augment_index") == 0))
               if held else None)
    return fit, holdout


@dataclass
class TrainingData:
    """The train split divided by source photo into a fitting part and an early-stopping holdout."""

    classes: list[str]
    fit: object  # ray.data.Dataset of shard rows
    holdout: object | None  # ray.data.Dataset of original (non-augmented) rows, or None
    fit_photos: int
    holdout_photos: int
    held_paths: frozenset[str]
    fingerprint: str  # changes whenever the live train photos change


def load_training_data(out: str, holdout_fraction: float, seed: int) -> TrainingData:
    manifest = load_manifest(out)
    ok_train = manifest.filter(pc.and_(pc.equal(manifest.column("status"), "ok"),
                                       pc.equal(manifest.column("split"), "train")))
    faces = read_live_faces(out, "train", FACE_COLUMNS)
    if faces is None or ok_train.num_rows == 0:
        raise NoTrainingData(f"no train face shards under {out}: run `faceproc preprocess --input DIR "
                             f"--output {out}` first")
    photos = list(zip(ok_train.column("path").to_pylist(), ok_train.column("label").to_pylist()))
    classes = sorted({label for _, label in photos})
    if len(classes) < 2:
        raise NoTrainingData(f"the train split under {out} has {len(classes)} person(s); need at least 2")
    held = select_holdout(photos, holdout_fraction, seed)
    fit, holdout = split_holdout(faces, held)
    digest = hashlib.sha256()
    for path, sha in sorted(zip(ok_train.column("path").to_pylist(), ok_train.column("sha256").to_pylist())):
        digest.update(f"{path}\0{sha}\n".encode())
    return TrainingData(classes, fit, holdout, len(photos) - len(held), len(held), frozenset(held),
                        digest.hexdigest())
