"""The preprocessing job end to end: real Ray Data, real MTCNN, real Parquet files."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from faceproc.config import Config
from faceproc.core.images import decode_png
from faceproc.core.manifest import load_manifest
from faceproc.core.schema import FACE_SCHEMA, REJECT_SCHEMA
from faceproc.core.shards import iter_live_faces, live_shard_files, read_live_faces
from faceproc.preprocess.run import PreprocessError, run_preprocess
from tests.conftest import DATASET, raw_png, run_in_fresh_process

pytestmark = pytest.mark.usefixtures("ray_session")

FACE_PHOTOS = {  # one clear face each
    "train/madonna/a.jpg": "train/madonna/httpiamediaimdbcomimagesMMVBMTANDQNTAxNDVeQTJeQWpwZBbWUMDIMjQOTYVUXCRALjpg.jpg",
    "train/ben_afflek/b.jpg": "train/ben_afflek/httpcsvkmeuaeccjpg.jpg",
    "val/madonna/c.jpg": "val/madonna/httpassetsrollingstonecomassetsarticlemadonnadavidbowiechangedthecourseofmylifeforeversmallsquarexmadonnabowiejpg.jpg",
}


def _config(input_dir: Path, out: Path, **preprocess) -> Config:
    config = Config(input=str(input_dir), output=str(out))
    for key, value in preprocess.items():
        setattr(config.preprocess, key, value)
    return config


def _tree(root: Path) -> dict[str, str]:
    """Three real face photos and one file for every way an input can fail; returns expected reasons."""
    for target, source in FACE_PHOTOS.items():
        src = DATASET / source
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / target)
    bad = {
        "train/madonna/empty.jpg": (b"", "empty_file"),
        "train/madonna/notes.jpg": (b"these are not pixels\n" * 10, "not_an_image"),
        "train/ben_afflek/cut.jpg": ((root / "train/ben_afflek/b.jpg").read_bytes()[:2000], "truncated"),
        "train/ben_afflek/bomb.png": (raw_png(30000, 30000, 8, 2), "too_large"),
        "val/madonna/tiny.png": (_png(np.zeros((8, 8, 3), np.uint8)), "too_small"),
        "val/madonna/wall.png": (_png(np.full((200, 200, 3), 180, np.uint8)), "no_face"),
        "val/stray.jpg": ((root / "val/madonna/c.jpg").read_bytes(), "bad_layout"),
    }
    for rel, (data, _) in bad.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "train" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return {rel: reason for rel, (_, reason) in bad.items()}


def _png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def _detection_actors_started() -> int:
    """Detection actors this Ray has started so far, finished ones included (Ray's state API)."""
    import ray
    from ray.util.state import list_actors

    actors = list_actors(address=ray.get_runtime_context().gcs_address, limit=10_000, raise_on_missing_output=False)
    return sum("FacePipeline" in actor.class_name for actor in actors)


def _snapshot(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "config.json"
            and "runs" not in p.parts}


def test_every_file_is_a_face_or_a_reject_and_reruns_are_incremental(tmp_path):
    root, out = tmp_path / "photos", tmp_path / "out"
    expected_rejects = _tree(root)
    actors_before = _detection_actors_started()
    # 10 files in batches of 4: three batches for the two actors (a batch size changes no row)
    summary = run_preprocess(_config(root, out, max_reject_share=1.0, augment_copies=2, actor_batch_size=4,
                                     driver_max_photos=0))
    assert _detection_actors_started() - actors_before == 2

    assert (summary.discovered, summary.skipped_hidden) == (10, 1)
    rejects = pq.read_table(out / "rejects.parquet")
    assert rejects.schema.equals(REJECT_SCHEMA)
    got = {Path(p).relative_to(root).as_posix(): r for p, r in
           zip(rejects.column("path").to_pylist(), rejects.column("reason").to_pylist())}
    assert got == expected_rejects
    assert all(rejects.column("detail").to_pylist())

    manifest = load_manifest(str(out))
    assert manifest.num_rows == 10
    assert sorted(manifest.column("status").to_pylist()) == ["ok"] * 3 + ["rejected"] * 7
    assert summary.face_photos + summary.rejects == summary.discovered
    # the stray copy of c.jpg sits outside any split, so it is not leakage; nothing else is shared
    assert summary.leakage == []

    train_files = live_shard_files(str(out), "train")
    train = pq.read_table(train_files[0])
    assert train.schema.equals(FACE_SCHEMA)
    assert train.num_rows == 2 * 3 and sorted(train.column("augment_index").to_pylist()) == [0, 0, 1, 1, 2, 2]
    val = pq.read_table(live_shard_files(str(out), "val")[0])
    assert val.num_rows == 1 and val.column("augment_index").to_pylist() == [0]
    face = decode_png(val.column("image")[0].as_py())
    assert face.shape == (160, 160, 3)
    x0, y0, x1, y1 = val.column("box")[0].as_py()
    width, height = Image.open(root / "val/madonna/c.jpg").size
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height

    # nothing new: nothing is written, every published byte stays the same
    before = _snapshot(out)
    again = run_preprocess(_config(root, out, max_reject_share=1.0, augment_copies=2))
    assert (again.processed, again.unchanged, again.face_rows) == (0, 10, 0)
    assert _snapshot(out) == before

    # one changed, one deleted, one new file: only those are processed
    (root / "val/madonna/wall.png").unlink()
    shutil.copy(root / "train/madonna/a.jpg", root / "train/ben_afflek/b.jpg")  # changed content
    shutil.copy(root / "val/madonna/c.jpg", root / "val/madonna/d.jpg")  # new (same content as c)
    third = run_preprocess(_config(root, out, max_reject_share=1.0, augment_copies=2))
    assert (third.new, third.changed, third.deleted, third.processed) == (1, 1, 1, 2)
    assert _detection_actors_started() - actors_before == 2  # two photos: detected in the driver, no actor
    live = read_live_faces(str(out), "train", ["source_path", "source_sha256"]).to_pandas()
    b_rows = live[live.source_path.str.endswith("ben_afflek/b.jpg")]
    assert len(b_rows) == 3 and set(b_rows.source_sha256) == {
        hashlib.sha256((root / "train/madonna/a.jpg").read_bytes()).hexdigest()}
    manifest = load_manifest(str(out))
    assert "wall.png" not in " ".join(manifest.column("path").to_pylist())
    assert "wall.png" not in " ".join(pq.read_table(out / "rejects.parquet").column("path").to_pylist())
    # a.jpg (train) and b.jpg (train, now a's content) are one photo twice, but in one split: no leakage
    assert third.leakage == []


def test_a_few_photos_detected_in_the_driver_give_the_rows_and_rejects_of_the_actor_pool(tmp_path):
    root = tmp_path / "photos"
    _tree(root)
    outs = {where: tmp_path / where for where in ("actors", "driver")}
    actors_before = _detection_actors_started()
    # batches of 4 in both (detection batches photos by size, so its batches shape the boxes); the
    # driver's three batches on three threads at once
    summaries = {where: run_preprocess(_config(root, out, max_reject_share=1.0, augment_copies=2, actor_batch_size=4,
                                               driver_max_photos=0 if where == "actors" else 32, driver_threads=3))
                 for where, out in outs.items()}
    assert _detection_actors_started() - actors_before == 2  # the pool's two actors, for "actors" only
    assert summaries["driver"].detected_in == "the driver (3 threads)"
    assert summaries["actors"].detected_in == "a Ray Data pool of 2 actors"

    def rows(out: Path) -> list[tuple]:
        columns = ["source_path", "split", "label", "augment_index", "aligned", "box", "faces_found"]
        faces = [row for split in ("train", "val") for table in iter_live_faces(str(out), split, columns)
                 for row in table.to_pylist()]
        return sorted((Path(r["source_path"]).relative_to(root).as_posix(), r["split"], r["label"],
                       r["augment_index"], r["aligned"], r["faces_found"], tuple(r["box"])) for r in faces)

    def rejects(out: Path) -> list[tuple]:
        table = pq.read_table(out / "rejects.parquet", columns=["path", "reason", "split", "label"])
        return sorted(tuple(r.values()) for r in table.to_pylist())

    assert len(rows(outs["driver"])) == 2 * 3 + 1  # two train faces with two copies each, one val face
    assert rows(outs["driver"]) == rows(outs["actors"])
    assert rejects(outs["driver"]) == rejects(outs["actors"]) and len(rejects(outs["driver"])) == 7
    counts = ["face_photos", "face_rows", "augmented_rows", "aligned_faces", "rejects", "rejects_by_reason"]
    assert [getattr(summaries["driver"], c) for c in counts] == [getattr(summaries["actors"], c) for c in counts]


def test_a_rerun_goes_by_the_listing_and_verify_hashes_reads_everything(tmp_path):
    """A file whose size and mtime are unchanged is not read (so content swapped under the same entry
    goes unnoticed); `verify_hashes` reads every file and catches it; a new mtime alone redoes a file."""
    root, out = tmp_path / "photos", tmp_path / "out"
    for target in ("train/madonna/a.jpg", "train/ben_afflek/b.jpg"):
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATASET / FACE_PHOTOS[target], root / target)
    run_preprocess(_config(root, out, max_reject_share=1.0))
    swapped, touched = root / "train/madonna/a.jpg", root / "train/ben_afflek/b.jpg"
    entry = swapped.stat()
    replacement = os.urandom(entry.st_size)
    swapped.write_bytes(replacement)
    os.utime(swapped, ns=(entry.st_atime_ns, entry.st_mtime_ns))

    trusting = run_preprocess(_config(root, out, max_reject_share=1.0))
    assert (trusting.processed, trusting.unchanged) == (0, 2)

    verified = run_preprocess(_config(root, out, max_reject_share=1.0, verify_hashes=True))
    assert (verified.changed, verified.processed, verified.rejects_by_reason) == (1, 1, {"not_an_image": 1})
    row = load_manifest(str(out)).filter(pc.equal(load_manifest(str(out)).column("path"), str(swapped)))
    assert row.column("sha256").to_pylist() == [hashlib.sha256(replacement).hexdigest()]  # the worker's hash

    os.utime(touched, ns=(entry.st_atime_ns, entry.st_mtime_ns + 10**9))
    again = run_preprocess(_config(root, out, max_reject_share=1.0))
    assert (again.changed, again.processed, again.face_photos) == (1, 1, 1)


def test_leakage_and_reject_share(tmp_path, caplog):
    root, out = tmp_path / "photos", tmp_path / "out"
    _tree(root)
    shutil.copy(root / "val/madonna/c.jpg", root / "train/madonna/c_again.jpg")
    with pytest.raises(PreprocessError, match=r"7 of 11 input files were rejected") as failure:
        run_preprocess(_config(root, out, max_reject_share=0.5))
    (warning,) = [r.getMessage() for r in caplog.records if "same content as a train photo" in r.getMessage()]
    assert warning.endswith(f"(1), which the accuracy report counts though the models saw them (the manifest flags "
                            f"them: leakage): {root / 'val/madonna/c.jpg'}")
    manifest = load_manifest(str(out))  # the outputs are published before the verdict
    rejected = manifest.filter(pc.equal(manifest["status"], "rejected"))["reason"].to_pylist()
    reasons = ", ".join(f"{reason} {rejected.count(reason)}"
                        for reason in sorted(set(rejected), key=lambda r: (-rejected.count(r), r)))
    assert (f"(64% > preprocess.max_reject_share 50%): {reasons}; each file and its reason are in "
            f"{out}/rejects.parquet. The other files' faces are published (`faceproc train` uses them); for "
            "`faceproc run` to go on, raise preprocess.max_reject_share") in str(failure.value)
    leaked = manifest.filter(manifest.column("leakage")).column("path").to_pylist()
    assert sorted(Path(p).name for p in leaked) == ["c.jpg", "c_again.jpg"]


def test_a_run_that_died_leaves_the_previous_state_and_is_cleaned_up(tmp_path):
    root, out = tmp_path / "photos", tmp_path / "out"
    _tree(root)
    run_preprocess(_config(root, out, max_reject_share=1.0, augment_copies=2))
    before = _snapshot(out)
    # what a run killed after moving shards but before the manifest leaves behind
    orphan = out / "shards" / "train" / "20990101T000000Z-dead00.00000.parquet"
    shutil.copy(live_shard_files(str(out), "train")[0], orphan)
    (out / "_staging" / "20990101T000000Z-dead00").mkdir(parents=True)
    assert orphan.name not in " ".join(live_shard_files(str(out), "train"))
    assert read_live_faces(str(out), "train", ["source_path", "source_sha256"]).count() == 6
    rerun = run_preprocess(_config(root, out, max_reject_share=1.0, augment_copies=2))  # nothing new to process
    assert rerun.processed == 0
    assert not orphan.exists() and not (out / "_staging").exists()
    assert all(before[k] == v for k, v in _snapshot(out).items() if k.startswith("shards/train"))


@pytest.mark.slow
def test_the_fetched_dataset(tmp_path, dataset_dir):
    out = tmp_path / "out"
    summary = run_preprocess(_config(dataset_dir, out))
    manifest = load_manifest(str(out))
    splits = manifest.column("split").to_pylist()
    assert (splits.count("train"), splits.count("val"), summary.skipped_hidden) == (93, 25, 0)
    ok = manifest.filter(pc.equal(manifest.column("status"), "ok"))
    train_ok = ok.column("split").to_pylist().count("train")
    val_ok = ok.column("split").to_pylist().count("val")
    rejects = pq.read_table(out / "rejects.parquet")
    assert set(rejects.column("reason").to_pylist()) <= {"no_face"}
    assert train_ok + val_ok + rejects.num_rows == 118
    train_rows = sum(pq.read_metadata(f).num_rows for f in live_shard_files(str(out), "train"))
    val_rows = sum(pq.read_metadata(f).num_rows for f in live_shard_files(str(out), "val"))
    assert train_rows == train_ok and val_rows == val_ok  # the default stores no augmented copies
    assert train_ok >= 92 and val_ok >= 24
    assert summary.leakage == []
    faces_found = pq.read_table(live_shard_files(str(out), "train")[0]).column("faces_found").to_pylist()
    assert max(faces_found) >= 2  # the dataset has photos with more than one face

    before = _snapshot(out)
    second = run_preprocess(_config(dataset_dir, out))
    assert (second.processed, second.face_rows, second.rejects) == (0, 0, 0)
    assert _snapshot(out) == before


def _live(out: Path) -> list[dict]:
    rows = read_live_faces(str(out), "train", ["source_path", "augment_index", "run_id", "aligned", "image"])
    return sorted(rows.take_all(), key=lambda r: (r["source_path"], r["augment_index"])) if rows is not None else []


@pytest.mark.slow
def test_a_settings_change_redoes_exactly_the_rows_it_shapes(tmp_path):
    """face_margin and augment_copies shape rows: every photo is redone and no old row stays live. An
    actor count does not: nothing is redone. The config saved beside the rows follows."""
    import json

    root, out = tmp_path / "in", tmp_path / "out"
    for target in ("train/madonna/a.jpg", "train/ben_afflek/b.jpg"):
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATASET / FACE_PHOTOS[target], root / target)
    (root / "train/madonna/wall.png").write_bytes(_png(np.full((200, 200, 3), 180, np.uint8)))  # a no_face

    first = run_preprocess(_config(root, out, augment_copies=2, max_reject_share=0.5))
    assert (first.processed, first.face_rows, first.aligned_faces, first.unaligned_faces) == (3, 6, 2, 0)
    before = _live(out)
    assert all(row["aligned"] for row in before)

    same = run_preprocess(_config(root, out, augment_copies=2, max_reject_share=0.4, detector_actors=1,
                                  actor_batch_size=4))
    assert (same.processed, same.resettled) == (0, 0)

    changed = run_preprocess(_config(root, out, augment_copies=0, face_margin=0.4, max_reject_share=0.5))
    assert (changed.processed, changed.resettled, changed.new, changed.changed) == (3, 3, 0, 0)
    assert "augment_copies 2 -> 0" in changed.settings_change and "face_margin 0.1 -> 0.4" in changed.settings_change
    after = _live(out)
    assert [(r["source_path"], r["augment_index"]) for r in after] == [
        (str(root / "train/ben_afflek/b.jpg"), 0), (str(root / "train/madonna/a.jpg"), 0)]
    assert {r["run_id"] for r in after} == {changed.run_id}  # no row of the old settings is live
    old_crop = next(r for r in before if r["source_path"] == after[0]["source_path"] and r["augment_index"] == 0)
    assert old_crop["image"] != after[0]["image"]  # a wider margin: another crop
    saved = json.loads((out / "config.json").read_text())["preprocess"]
    assert (saved["augment_copies"], saved["face_margin"]) == (0, 0.4)

    unaligned = run_preprocess(_config(root, out, augment_copies=0, face_margin=0.4, align=False,
                                       max_reject_share=0.5))
    assert (unaligned.resettled, unaligned.aligned_faces, unaligned.unaligned_faces) == (3, 0, 2)
    assert "align true -> false" in unaligned.settings_change
    assert not any(row["aligned"] for row in _live(out))


def test_photos_the_driver_detects_do_not_start_ray(tmp_path):
    """A fresh process with no Ray address (a laptop's `faceproc preprocess`) detects a few photos in
    the driver without starting Ray: the pool's start-up is all Ray would add."""
    root, out = tmp_path / "photos", tmp_path / "out"
    for target in ("train/madonna/a.jpg", "train/ben_afflek/b.jpg"):
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATASET / FACE_PHOTOS[target], root / target)
    script = (
        "import json, ray\n"
        "from faceproc.config import Config\n"
        "from faceproc.preprocess.run import run_preprocess\n"
        f"summary = run_preprocess(Config(input={str(root)!r}, output={str(out)!r}))\n"
        "print(json.dumps({'faces': summary.face_rows, 'ray_started': ray.is_initialized()}))\n"
    )
    assert run_in_fresh_process(script) == {"faces": 2, "ray_started": False}
    assert sum(table.num_rows for table in iter_live_faces(str(out), "train", ["source_path"])) == 2
