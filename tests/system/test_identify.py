"""`faceproc identify` on real photos with the session's trained FaceNet (slow).

Unlabelled photos in any layout: the val photos under made-up nested folders and names, a stranger,
a photo of two people, a wall and a broken file. Then reruns: nothing new reads nothing, one new photo
reads exactly one, a new model version names every stored face again without reading a photo (or,
asked to, keeps the old results), and a run killed before its commit leaves the identities folder as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from faceproc.cli import main
from faceproc.core.manifest import load_manifest
from faceproc.core.rejects import read_live_rejects
from faceproc.identify.rows import iter_live_identities
from tests.system.test_crash_safety import KILL_AT_BOOTSTRAP, KILL_AT_ENV, _kill_session

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]

COLUMNS = ["photo_path", "face_index", "faces_in_photo", "person", "distance", "model_version", "box", "keypoints",
           "embedding", "embedder"]


def _identities(root: Path, with_faces: bool = False) -> list[dict]:
    manifest = load_manifest(str(root))
    tables = list(iter_live_identities(str(root), manifest, [*COLUMNS, *(["face"] if with_faces else [])]))
    return pa.concat_tables(tables).to_pylist() if tables else []


def _run(*args: str) -> None:
    assert main(["identify", *args]) == 0


def _side_by_side(left: Path, right: Path, dst: Path) -> None:
    a, b = Image.open(left).convert("RGB"), Image.open(right).convert("RGB")
    height = min(a.height, b.height)
    a, b = (im.resize((round(im.width * height / im.height), height)) for im in (a, b))
    both = Image.new("RGB", (a.width + b.width, height))
    both.paste(a, (0, 0))
    both.paste(b, (a.width, 0))
    both.save(dst, quality=92)


@pytest.fixture(scope="module")
def unlabelled(pipeline, dataset_dir, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """(photo tree, {file name: the person in it}) for the 25 val photos hidden under nested folders."""
    from skimage import data

    root = tmp_path_factory.mktemp("unlabelled")
    truth = {}
    for n, photo in enumerate(sorted((dataset_dir / "val").glob("*/*"))):
        folder = root / f"camera-{n % 3}" / ("2026" if n % 2 else "misc/deeper")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"IMG_{n:04d}{photo.suffix}"
        shutil.copy(photo, folder / name)
        truth[name] = photo.parent.name
    Image.fromarray(data.astronaut()).save(root / "stranger.png")
    Image.new("RGB", (300, 300), (200, 190, 180)).save(root / "wall.jpg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 200)
    pair = [sorted((dataset_dir / "val" / person).iterdir())[0] for person in ("madonna", "elton_john")]
    _side_by_side(*pair, root / "pair.jpg")
    truth["pair.jpg"] = "madonna+elton_john"
    return root, truth


def test_identify_names_every_face_in_any_layout(pipeline, unlabelled, tmp_path):
    config, _ = pipeline
    photos, truth = unlabelled
    into = tmp_path / "ids"
    # batches of 8 photos, three at a time on one IdentifyPipeline in the driver
    _run("--input", str(photos), "--output", config.output, "--into", str(into),
         "--set", "preprocess.actor_batch_size=8", "--set", "preprocess.driver_threads=3")
    rows = _identities(into)
    by_photo: dict[str, list[dict]] = {}
    for row in rows:
        by_photo.setdefault(Path(row["photo_path"]).name, []).append(row)

    named = [by_photo[name][0]["person"] == person for name, person in truth.items() if name.startswith("IMG_")]
    assert sum(named) >= 24, f"{sum(named)} of {len(named)} val photos named correctly"
    first = {r["face_index"]: r for r in by_photo["pair.jpg"]}
    assert len(by_photo["pair.jpg"]) == 2 and {r["faces_in_photo"] for r in by_photo["pair.jpg"]} == {2}
    left, right = sorted(first.values(), key=lambda r: r["box"][0])
    assert (left["person"], right["person"]) == ("madonna", "elton_john")
    assert by_photo["stranger.png"] and all(r["person"] == "unknown" for r in by_photo["stranger.png"])
    assert all(r["distance"] is not None and len(r["keypoints"]) == 10 for r in rows)
    trained = json.loads((Path(config.output) / "models" / "facenet" / "result.json").read_text())
    assert {r["embedder"] for r in rows} == {trained["embedder"]}  # the frozen FaceNet's backbone
    assert all(len(r["embedding"]) == 128 for r in rows)
    assert (Path(config.output) / "models" / "facenet" / "head.keras").is_file()  # to name them without FaceNet

    manifest = load_manifest(str(into))
    live_rejects = read_live_rejects(str(into), manifest).to_pylist()
    rejects = {Path(r["path"]).name: r["reason"] for r in live_rejects}
    assert rejects == {"wall.jpg": "no_face", "broken.jpg": "truncated"}
    (wall,) = [r["detail"] for r in live_rejects if r["reason"] == "no_face"]  # said as preprocessing says it
    assert re.fullmatch(r"MTCNN found no face with confidence >= 0\.\d+ \((best 0\.\d\d|no candidate)\)", wall), wall
    assert manifest.num_rows == len(truth) + 3  # every photo accounted for: faces or a reject
    report = (into / "identities.html").read_text()
    assert "madonna" in report and "unknown" in report and 'loading="lazy"' in report
    (record,) = (into / "runs").glob("*.identify.json")
    summary = json.loads(record.read_text())
    assert summary["processed"] == len(truth) + 3 and summary["live_faces"] == len(rows)
    assert summary["detected_in"] == "the driver (3 threads)"
    assert summary["faces_by_person"].get("unknown", 0) >= 1


@pytest.fixture
def model_copy(pipeline, tmp_path) -> Path:
    """An OUT of its own holding the session's FaceNet (so its version can change) and the train rows'
    settings record (so identify crops as training did)."""
    config, _ = pipeline
    out, copy = Path(config.output), tmp_path / "out"
    shutil.copytree(out / "models" / "facenet", copy / "models" / "facenet")
    shutil.copytree(out / "settings", copy / "settings")
    shutil.copy(out / "manifest.parquet", copy / "manifest.parquet")
    return copy


def _new_version(out: Path, version: str) -> None:
    result = out / "models" / "facenet" / "result.json"
    saved = json.loads(result.read_text())
    result.write_text(json.dumps({**saved, "model_version": version}))


def _as_an_earlier_faceproc_wrote(root: Path, photo_name: str) -> None:
    """Rewrite the identity shard files holding `photo_name`'s rows without the embedding columns."""
    for shard in (root / "shards").glob("*.parquet"):
        table = pq.read_table(shard)
        if any(Path(path).name == photo_name for path in table["photo_path"].to_pylist()):
            pq.write_table(table.drop_columns(["embedding", "embedder"]), shard)


def _summary(capsys) -> dict[str, str]:
    """The summary the last run printed, line name -> value."""
    lines = [line.strip().split("  ", 1) for line in capsys.readouterr().out.splitlines() if "  " in line.strip()]
    return {name.strip(): value.strip() for name, value in lines}


def test_reruns_read_only_what_is_new_or_needs_the_new_model(model_copy, dataset_dir, tmp_path, capsys):
    photos = tmp_path / "in"
    (photos / "a").mkdir(parents=True)
    val = sorted((dataset_dir / "val").glob("*/*"))
    for src in val[:3]:
        shutil.copy(src, photos / "a" / src.name)
    Image.new("RGB", (300, 300), (200, 190, 180)).save(photos / "a" / "wall.jpg")
    args = ("--input", str(photos), "--output", str(model_copy))
    into = model_copy / "identities"

    _run(*args)
    first = _summary(capsys)
    assert first["photos read this run"] == "4"
    _run(*args)
    assert _summary(capsys)["photos read this run"] == "0"
    assert len(list((into / "runs").glob("*.identify.json"))) == 1  # a run with nothing to do leaves no record

    _new_version(model_copy, "retrained-keep")
    shutil.copy(val[3], photos / val[3].name)
    _run(*args, "--keep-old-results")
    assert _summary(capsys)["photos read this run"] == "1"  # only the new photo; the others keep their names
    versions = {Path(r["photo_path"]).name: r["model_version"] for r in _identities(into)}
    assert versions[val[3].name] == "retrained-keep" and list(versions.values()).count("retrained-keep") == 1
    assert len(versions) == 4

    before = {(r["photo_path"], r["face_index"]): r for r in _identities(into, with_faces=True)}
    _as_an_earlier_faceproc_wrote(into, val[3].name)  # a shard without embeddings: its face needs FaceNet again
    _new_version(model_copy, "retrained")  # trained on the same rows: its faces are cut as the last version's
    _run(*args, "--set", "preprocess.driver_max_photos=0")  # on an actor pool, as a cluster does
    again = _summary(capsys)
    assert again["photos read this run"] == "0" and again["identified again (model or crops changed)"] == "4"
    assert again["photos named again from stored faces"] == "4 (4 faces)"
    assert again["from stored embeddings (no FaceNet pass)"] == "3 faces"
    record = json.loads(sorted((into / "runs").glob("*.identify.json"))[-1].read_text())
    assert (record["processed"], record["renamed"]) == (0, 4) and "Ray Data pool" in record["renamed_in"]
    rows = _identities(into, with_faces=True)
    assert {r["model_version"] for r in rows} == {"retrained"}
    assert {(r["photo_path"], r["face_index"]) for r in rows} == set(before)  # every face once, none lost
    for row in rows:  # the same weights on the same stored crops: the same verdicts
        old = before[row["photo_path"], row["face_index"]]
        assert (row["face"], row["box"], row["person"]) == (old["face"], old["box"], old["person"])
        assert row["distance"] == pytest.approx(old["distance"], abs=1e-4)
    rejects = read_live_rejects(str(into), load_manifest(str(into)))
    assert rejects["path"].to_pylist() == [str(photos / "a" / "wall.jpg")]  # no model finds a face there
    _new_version(model_copy, "retrained-again")  # whose open-set threshold takes every face for a stranger
    (centroids,) = model_copy.glob("models/facenet/**/centroids.json")
    centroids.write_text(json.dumps({**json.loads(centroids.read_text()), "threshold": 0.0}))
    shutil.copy(val[4], photos / val[4].name)
    _run(*args)  # in the driver, with a new photo beside the stored faces
    again = _summary(capsys)
    assert again["photos named again from stored faces"] == "4 (4 faces)"
    assert again["from stored embeddings (no FaceNet pass)"] == "4 faces"  # the pool stored the 4th's embedding
    record = json.loads(sorted((into / "runs").glob("*.identify.json"))[-1].read_text())
    assert (record["processed"], record["renamed"], record["renamed_in"]) == (1, 4, "the driver")
    rows = _identities(into)
    assert {r["model_version"] for r in rows} == {"retrained-again"} and len(rows) == len(before) + 1
    assert {r["person"] for r in rows} == {"unknown"}  # named by the new version, not restamped
    assert (model_copy / "reports" / "identities.html").is_file()
    (head,) = model_copy.glob("models/facenet/**/head.keras")
    head.unlink()  # as a model an earlier faceproc saved: FaceNet on every stored crop, in the driver
    _new_version(model_copy, "without-its-head")
    _run(*args)
    again = _summary(capsys)
    assert again["photos named again from stored faces"] == "5 (5 faces)" and again["named in"] == "the driver"
    assert "from stored embeddings (no FaceNet pass)" not in again
    rows = _identities(into)
    assert {r["model_version"] for r in rows} == {"without-its-head"} and {r["person"] for r in rows} == {"unknown"}
    assert {r["embedder"] for r in rows} == {None} and all(len(r["embedding"]) == 128 for r in rows)

    # a folder of the input alone would take the photo beside it for deleted: refused, nothing dropped
    assert main(["identify", "--input", str(photos / "a"), "--output", str(model_copy)]) == 2
    error = capsys.readouterr().err
    assert f"hold 2 photos from outside {photos / 'a'} (such as {photos / min(val[3].name, val[4].name)})" in error
    assert len(_identities(into)) == len(rows)


def test_a_run_killed_before_its_commit_leaves_nothing_live(model_copy, dataset_dir, tmp_path, capsys):
    photos = tmp_path / "in"
    photos.mkdir()
    for src in sorted((dataset_dir / "val").glob("*/*"))[:2]:
        shutil.copy(src, photos / src.name)
    (photos / "broken.jpg").write_bytes(b"not a photo\n" * 20)
    args = ["identify", "--input", str(photos), "--output", str(model_copy)]
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, KILL_AT_ENV: "write:rejects.parquet"}
    proc = subprocess.Popen([sys.executable, "-c", KILL_AT_BOOTSTRAP, *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        log = proc.communicate(timeout=900)[0].decode(errors="replace")
    finally:
        _kill_session(proc.pid)
    into = model_copy / "identities"
    assert proc.returncode == -9, log[-3000:]
    assert (into / "rejects.parquet").is_file() and list((into / "shards").glob("*.parquet"))  # published, then killed
    assert not (into / "manifest.parquet").exists() and _identities(into) == []  # but nothing is live

    _run(*args[1:])
    assert _summary(capsys)["photos read this run"] == "3"
    rows, manifest = _identities(into), load_manifest(str(into))
    assert sorted(manifest["status"].to_pylist()) == ["ok", "ok", "rejected"]
    assert len({r["photo_path"] for r in rows}) == 2
    assert len(list((into / "shards").glob("*.parquet"))) == 1  # the dead run's shard file is gone
    assert read_live_rejects(str(into), manifest).num_rows == 1
