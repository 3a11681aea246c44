"""Which identity rows are live, and the identities page built from them (synthetic rows, no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from faceproc.core import storage
from faceproc.core.images import encode_png
from faceproc.core.manifest import plan_run
from faceproc.core.schema import IDENTITY_SCHEMA, MANIFEST_SCHEMA, REJECT_SCHEMA
from faceproc.identify import report
from faceproc.identify.rows import iter_live_identities
from faceproc.identify.run import IdentifySummary, _as_judged, _stored_faces_to_rename, identity_settings
from faceproc.preprocess.discover import LISTING_SCHEMA

FACE = encode_png(np.full((16, 16, 3), 128, np.uint8))


def _row(photo: str, person: str, run: str, distance: float, index: int = 0) -> dict:
    return {"photo_path": photo, "photo_sha256": f"sha-{photo}", "face_index": index, "faces_in_photo": index + 1,
            "box": [0, 0, 10, 10], "keypoints": [1.0] * 10, "confidence": 0.99, "aligned": True, "person": person,
            "probability": 0.9, "distance": distance, "embedding": [0.5] * 4, "embedder": "weights-sha",
            "model": "facenet", "model_version": "v1", "face": FACE, "run_id": run}


def _manifest_row(photo: str, run: str, status: str = "ok", settings: str = "v1") -> dict:
    return {"path": photo, "sha256": f"sha-{photo}", "split": None, "label": None, "status": status,
            "reason": "no_face" if status == "rejected" else None, "face_rows": int(status == "ok"),
            "leakage": False, "run_id": run, "settings": settings, "size": 1, "mtime_ns": 1}


def _folder(tmp_path, rows_by_run: dict[str, list[dict]], manifest: list[dict]) -> tuple[str, pa.Table]:
    root = str(tmp_path / "ids")
    for run, rows in rows_by_run.items():
        storage.write_table_atomic(f"{root}/shards/{run}.00000.parquet", pa.Table.from_pylist(rows, schema=IDENTITY_SCHEMA))
    table = pa.Table.from_pylist(manifest, schema=MANIFEST_SCHEMA)
    storage.write_table_atomic(f"{root}/manifest.parquet", table)
    return root, table


def test_rows_of_a_photo_identified_again_or_of_a_dead_run_are_not_live(tmp_path):
    root, manifest = _folder(tmp_path, {
        "r1": [_row("/p/a.jpg", "madonna", "r1", 0.3), _row("/p/b.jpg", "madonna", "r1", 0.4)],
        "r2": [_row("/p/b.jpg", "elton_john", "r2", 0.2)],  # b identified again by run r2
        "r3": [_row("/p/c.jpg", "madonna", "r3", 0.2)],  # a run that died before its commit
    }, [_manifest_row("/p/a.jpg", "r1"), _manifest_row("/p/b.jpg", "r2")])
    rows = [r for t in iter_live_identities(root, manifest, ["photo_path", "person"]) for r in t.to_pylist()]
    assert sorted((r["photo_path"], r["person"]) for r in rows) == [("/p/a.jpg", "madonna"), ("/p/b.jpg", "elton_john")]


def _plan_for_version(manifest: pa.Table, crops: str, version: str, keep_old_results: bool = False):
    """identify's plan for an unchanged listing of the manifest's photos."""
    files = [{"path": p, "size": 1, "mtime_ns": 1} for p in manifest["path"].to_pylist()]
    listing = pa.Table.from_pylist(files, schema=LISTING_SCHEMA)
    listing = listing.append_column("sha256", pa.nulls(manifest.num_rows, pa.string()))
    return plan_run(listing, _as_judged(manifest, version, crops, keep_old_results), identity_settings(crops, version))


def test_a_new_model_version_names_stored_faces_again_and_reads_only_photos_cut_otherwise(tmp_path, caplog):
    root, manifest = _folder(tmp_path, {"r1": [_row("/p/same-crops.jpg", "madonna", "r1", 0.3)]}, [
        _manifest_row("/p/same-crops.jpg", "r1", settings="c1/v1"),
        _manifest_row("/p/shard-lost.jpg", "r9", settings="c1/v1"),  # its stored face is gone: read again
        _manifest_row("/p/no-face.jpg", "r1", "rejected", settings="c1/v1"),
        _manifest_row("/p/other-crops.jpg", "r1", settings="c0/v1"),
        _manifest_row("/p/other-crops-no-face.jpg", "r1", "rejected", settings="c0/v1"),
        _manifest_row("/p/earlier-faceproc.jpg", "r1", settings="v1"),  # no crop fingerprint: read again
        _manifest_row("/p/earlier-faceproc-same-version.jpg", "r0", settings="v2"),  # its faces are v2's
        _manifest_row("/p/current.jpg", "r2", settings="c1/v2"),
    ])

    plan = _plan_for_version(manifest, "c1", "v2")
    assert plan.unchanged == 3 and plan.resettled == 5  # no-face.jpg stays rejected: no model finds a face
    assert sorted(plan.paths) == ["/p/earlier-faceproc.jpg", "/p/other-crops-no-face.jpg", "/p/other-crops.jpg",
                                  "/p/same-crops.jpg", "/p/shard-lost.jpg"]
    renames = _stored_faces_to_rename(plan, manifest, "c1", root, "weights-sha")
    assert renames.photos["path"].to_pylist() == ["/p/same-crops.jpg"]
    assert (renames.from_embeddings, renames.backbone_photos) == (1, 0)  # named by the head alone
    assert "1 photo lack stored faces the manifest counts (a shard file lost, such as one of run r9)" in caplog.text
    other = _stored_faces_to_rename(plan, manifest, "c1", root, "other-weights")  # embedded by another backbone
    assert (other.from_embeddings, other.backbone_photos) == (0, 1)

    kept = _plan_for_version(manifest, "c1", "v2", keep_old_results=True)
    assert kept.to_process.num_rows == 0
    assert _stored_faces_to_rename(kept, manifest, "c1", root, None).photos.num_rows == 0


def test_page_groups_people_unknown_last_nearest_first_and_says_what_it_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "MAX_FACES_PER_GROUP", 2)
    rows = [_row("/p/m1.jpg", "madonna", "r1", 0.5), _row("/p/m2.jpg", "madonna", "r1", 0.1),
            _row("/p/m3.jpg", "madonna", "r1", 0.3), _row("/p/u1.jpg", "unknown", "r1", 1.4),
            _row("/p/e1.jpg", "elton_john", "r1", 0.2), _row("/p/e1.jpg", "unknown", "r1", 1.3, index=1)]
    photos = ["/p/m1.jpg", "/p/m2.jpg", "/p/m3.jpg", "/p/u1.jpg", "/p/e1.jpg"]
    root, manifest = _folder(tmp_path, {"r1": rows}, [_manifest_row(p, "r1") for p in photos]
                             + [_manifest_row("/p/wall.jpg", "r1", "rejected")])
    storage.write_table_atomic(f"{root}/rejects.parquet", pa.Table.from_pylist(
        [{"path": "/p/wall.jpg", "reason": "no_face", "detail": "MTCNN found no face", "split": None,
          "label": None, "sha256": "sha-/p/wall.jpg", "run_id": "r1"}], schema=REJECT_SCHEMA))
    summary = IdentifySummary(run_id="r1", model="facenet", model_version="v1", identities=root, discovered=6,
                              live_photos=5, live_faces=6, live_rejects=1, faces_by_person={"madonna": 3, "unknown": 2, "elton_john": 1})
    page = report.render(root, manifest, summary)
    order = [page.index(f"{name} <span") for name in ("madonna", "elton_<wbr>john", "unknown")]
    assert order == sorted(order)  # most faces first, unknown last
    madonna = page[order[0]:order[1]]
    assert madonna.index("m2.jpg") < madonna.index("m3.jpg") and "m1.jpg" not in madonna  # nearest two shown
    assert "Showing the nearest 2 of 3 faces (1 more not shown)" in madonna
    assert page[order[2]:].count("<figure") == 2 and "face_index 1 · p 0.90" in page  # the photo's second face
    assert page.count('loading="lazy"') == 5 and "wall.jpg" in page and "no_face" in page
    assert "older version" not in page
    summary.older_versions = 2  # --keep-old-results kept faces another version named: the header says so
    assert "version v1 (2 faces named by an older version, kept by --keep-old-results)" in report.render(
        root, manifest, summary)
