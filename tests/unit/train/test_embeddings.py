"""The FaceNet embedding cache: one file per shard, missing shards embedded together, then reused; a
few new faces (or any, when no Ray runs) embedded by the caller's FaceNet instead of an actor (slow)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from faceproc.train.embeddings import FaceNetEmbedder, ensure_embeddings
from tests.conftest import FACENET_WEIGHTS, run_in_fresh_process, write_face_shards

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def embedder_actors() -> int:
    from ray.util.state import list_actors

    return sum("FaceNetEmbedder" in actor.class_name for actor in list_actors(limit=10_000))


def test_missing_shards_are_embedded_in_one_pass_and_then_reused_and_a_few_new_faces_in_the_driver(tmp_path):
    if not FACENET_WEIGHTS.is_file():
        pytest.fail(f"{FACENET_WEIGHTS} is missing: run `faceproc fetch-data` first")
    out = tmp_path / "out"
    write_face_shards(out, {"red": [(200, 40, 40), (220, 60, 50)]}, run_id="20260101T000000Z-first0", copies=1)
    write_face_shards(out, {"blue": [(40, 40, 200)]}, run_id="20260102T000000Z-second", copies=2)
    shards = sorted((out / "shards" / "train").glob("*.parquet"))
    assert len(shards) == 2

    files = ensure_embeddings(str(out), str(FACENET_WEIGHTS), "train")
    assert sorted(os.path.basename(f) for f in files) == [shard.name for shard in shards]
    for shard, cached in zip(shards, sorted(files)):
        faces = pq.read_table(shard, columns=["source_path", "augment_index"]).to_pylist()
        embedded = pq.read_table(cached)
        assert sorted(map(tuple, (row.values() for row in faces))) == sorted(
            zip(embedded.column("source_path").to_pylist(), embedded.column("augment_index").to_pylist()))
        vectors = np.stack(embedded.column("embedding").to_numpy(zero_copy_only=False))
        assert vectors.shape == (len(faces), 128) and np.isfinite(vectors).all()
        assert "path" not in embedded.column_names  # the shard column is for routing only

    written = {f: os.stat(f).st_mtime_ns for f in files}
    assert ensure_embeddings(str(out), str(FACENET_WEIGHTS), "train") == files
    assert {f: os.stat(f).st_mtime_ns for f in files} == written  # nothing embedded again

    # a third shard of one face with the pixels of red/0 (the same seeded noise): over the limit an
    # actor embeds it, within it the caller's FaceNet does, with the same rows and the vector of red/0
    write_face_shards(out, {"red": [(200, 40, 40)]}, run_id="20260103T000000Z-third0", copies=1, first=2)
    actors = embedder_actors()
    embedder = FaceNetEmbedder(str(FACENET_WEIGHTS))
    third = files[0].replace("20260101T000000Z-first0", "20260103T000000Z-third0")
    assert ensure_embeddings(str(out), str(FACENET_WEIGHTS), "train", embedder=embedder, driver_max_rows=0) \
        == files + [third]
    assert embedder_actors() == actors + 1  # one face over the limit of 0: the Ray Data actor embedded it
    by_actor = pq.read_table(third)
    os.remove(third)
    assert ensure_embeddings(str(out), str(FACENET_WEIGHTS), "train", embedder=embedder, driver_max_rows=1) \
        == files + [third]
    assert embedder_actors() == actors + 1  # within the limit: no new actor
    by_driver = pq.read_table(third)
    assert by_driver.schema == by_actor.schema
    assert by_driver.drop_columns(["embedding"]).equals(by_actor.drop_columns(["embedding"]))
    vector = np.stack(by_driver.column("embedding").to_numpy(zero_copy_only=False))
    assert np.allclose(vector, np.stack(by_actor.column("embedding").to_numpy(zero_copy_only=False)), atol=1e-4)
    first_red = pq.read_table(sorted(files)[0]).to_pylist()[0]
    assert first_red["source_path"] == "/photos/train/red/0.jpg"
    assert np.allclose(vector[0], first_red["embedding"], atol=1e-4)  # same pixels as red/0


def test_without_ray_the_callers_facenet_embeds_whatever_the_limit(tmp_path):
    """A training that runs without Ray (`placement_without_ray` counts live rows only) must not have
    its embeddings start one: with no Ray running, the caller's FaceNet embeds shards over the limit."""
    out = tmp_path / "out"
    write_face_shards(out, {"red": [(200, 40, 40)], "blue": [(40, 40, 200)]}, copies=2)
    script = (
        "import json, ray\n"
        "from faceproc.train.embeddings import FaceNetEmbedder, ensure_embeddings\n"
        f"embedder = FaceNetEmbedder({str(FACENET_WEIGHTS)!r})\n"
        f"files = ensure_embeddings({str(out)!r}, {str(FACENET_WEIGHTS)!r}, 'train', embedder=embedder,\n"
        "                          driver_max_rows=1)\n"
        "print(json.dumps({'files': len(files), 'ray_started': ray.is_initialized()}))\n"
    )
    assert run_in_fresh_process(script) == {"files": 1, "ray_started": False}
    (cached,) = (out / "embeddings").rglob("*.parquet")
    assert pq.read_metadata(cached).num_rows == 4  # 2 photos x 2 copies, over the limit of 1
