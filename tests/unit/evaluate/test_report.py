"""The HTML report, built from a small but real OUT tree and rendered in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from faceproc.core import layout, storage
from faceproc.core.images import encode_png
from faceproc.core.manifest import load_manifest
from faceproc.core.model_names import REFERENCE_ACCURACY
from faceproc.core.schema import FACE_SCHEMA, MANIFEST_SCHEMA, REJECT_SCHEMA
from faceproc.evaluate.metrics import accuracy_rows
from faceproc.evaluate.report.page import write_report
from faceproc.evaluate.tables import write_accuracy
from tests.browser import needs_chromium, render
from tests.conftest import write_face_shards

PEOPLE = {"alice": (214, 96, 77), "bob": (67, 147, 195), "carol": (90, 174, 97)}
RUN = "run-test-1"


# --- a small synthetic OUT tree --------------------------------------------------------------


def _photo(path: Path, colour: tuple[int, int, int], box: tuple[int, int, int, int], seed: int) -> None:
    img = Image.new("RGB", (320, 240), (235 - seed * 9, 228, 210 + seed * 5))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 170, 320, 240], fill=(120, 110, 100))
    draw.ellipse(box, fill=colour, outline=(40, 30, 30), width=3)
    draw.rectangle([box[0] + 20, box[1] + 30, box[0] + 30, box[1] + 40], fill=(20, 20, 20))
    draw.rectangle([box[2] - 30, box[1] + 30, box[2] - 20, box[1] + 40], fill=(20, 20, 20))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=90)


def _crop_png(photo: Path, box: tuple[int, int, int, int], augment: int) -> bytes:
    crop = Image.open(photo).convert("RGB").crop(box).resize((160, 160))
    if augment == 1:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    elif augment == 2:
        crop = crop.rotate(12, fillcolor=(0, 0, 0)).point(lambda v: min(255, int(v * 1.2)))
    buf = io.BytesIO()
    crop.save(buf, format="PNG")
    return buf.getvalue()


def _sha(photo: Path, label: str) -> str:
    return f"sha-{photo.name}-{label}"


def _manifest_row(path: Path, sha: str, split: str | None, label: str | None, face_rows: int,
                  reason: str | None = None) -> dict:
    """A manifest row of RUN: `ok` with its face rows, or `rejected` with `reason`."""
    return dict(path=str(path), sha256=sha, split=split, label=label, status="rejected" if reason else "ok",
                reason=reason, face_rows=face_rows, leakage=False, run_id=RUN)


def _face_row(photo: Path, label: str, split: str, box, augment: int) -> dict:
    return {
        "image": _crop_png(photo, box, augment),
        "label": label,
        "label_id": sorted(PEOPLE).index(label),
        "split": split,
        "source_path": str(photo),
        "source_sha256": _sha(photo, label),
        "box": list(box),
        "confidence": 0.998,
        "faces_found": 2 if photo.name == "p1.jpg" and label == "bob" else 1,
        "augment_index": augment,
        "run_id": RUN,
    }


def build_out(root: Path, *, with_accuracy_json: bool = False) -> tuple[str, Path]:
    """Photos under root/photos, outputs under root/out; returns (out, photos)."""
    photos = root / "photos"
    out = root / "out"
    train_rows, val_rows, manifest, rejects = [], [], [], []
    for i, (person, colour) in enumerate(sorted(PEOPLE.items())):
        box = (100 + 10 * i, 40, 210 + 10 * i, 170)
        p = photos / "train" / person / "t0.jpg"
        _photo(p, colour, box, i)
        train_rows += [_face_row(p, person, "train", box, a) for a in (0, 1, 2)]
        manifest.append(_manifest_row(p, _sha(p, person), "train", person, face_rows=3))
        for k in (0, 1):
            vbox = (80 + 30 * k, 30 + 10 * k, 200 + 30 * k, 160 + 10 * k)
            v = photos / "val" / person / f"p{k}.jpg"
            _photo(v, colour, vbox, i + k)
            val_rows.append(_face_row(v, person, "val", vbox, 0))
            manifest.append(_manifest_row(v, _sha(v, person), "val", person, face_rows=1))

    # rejects: a decodable photo without a face, an undecodable file, a file in the wrong place
    noface = photos / "val" / "alice" / "landscape.jpg"
    img = Image.new("RGB", (300, 200), (150, 190, 230))
    ImageDraw.Draw(img).polygon([(0, 200), (120, 80), (220, 200)], fill=(90, 110, 90))
    img.save(noface, format="JPEG")
    broken = photos / "val" / "bob" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg <script>alert(1)</script>")
    stray = photos / "stray.jpg"
    stray.write_bytes(b"")
    for path, reason, detail, split, label in (
        (noface, "no_face", "MTCNN found no face above 0.9 <script>alert(1)</script>", "val", "alice"),
        (broken, "truncated", "image file is truncated <b>&</b>", "val", "bob"),
        (stray, "bad_layout", "not at <root>/<split>/<person>/<file>", None, None),
    ):
        rejects.append(
            dict(
                path=str(path),
                reason=reason,
                detail=detail,
                split=split,
                label=label,
                sha256="sha-" + path.name,
                run_id=RUN,
            )
        )
        manifest.append(_manifest_row(path, "sha-" + path.name, split, label, face_rows=0, reason=reason))

    o = str(out)
    for split, rows in (("train", train_rows), ("val", val_rows)):  # shards of the run the manifest names
        storage.write_table_atomic(
            f"{layout.shard_dir(o, split)}/{layout.shard_name(RUN, 0)}", pa.Table.from_pylist(rows, schema=FACE_SCHEMA)
        )
    storage.write_table_atomic(f"{o}/rejects.parquet", pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA))
    storage.write_table_atomic(
        f"{o}/manifest.parquet", pa.Table.from_pylist(manifest, schema=MANIFEST_SCHEMA)
    )

    results = [
        {"model": "cnn", "status": "ok", "reason": None, "train_seconds": 41.2, "epochs": 6, "best_epoch": 3,
         "in_driver": True, "finished_at_unix": 1797000000.0, "fingerprint": "f1" * 32},
        {
            "model": "resnet50_imagenet",
            "status": "skipped",
            "reason": "ImageNet weights unavailable offline; put resnet50 notop .h5 at models/x.h5",
            "train_seconds": None,
        },
        {"model": "facenet", "status": "ok", "reason": None, "train_seconds": 9.8, "epochs": 6},
    ]
    for r in results:
        storage.write_json_atomic(f"{o}/models/{r['model']}/result.json", r)
    for name, (l0, a0) in (("cnn", (1.6, 0.3)), ("facenet", (0.9, 0.6))):
        epochs = list(range(6))  # as training writes them: from 0
        storage.write_json_atomic(
            f"{o}/models/{name}/history.json",
            {
                "epoch": epochs,
                "loss": [l0 * 0.7**e for e in epochs],
                "accuracy": [min(1.0, a0 + 0.1 * e) for e in epochs],
                "holdout_loss": [l0 * 0.8**e + 0.1 for e in epochs],
                "holdout_accuracy": [min(1.0, a0 + 0.07 * e) for e in epochs],
            },
        )

    # predictions: cnn gets two photos wrong, facenet one
    wrong = {("cnn", "alice", 1): "bob", ("cnn", "carol", 0): "alice", ("facenet", "bob", 1): "carol"}
    preds = []
    for model in ("cnn", "facenet"):
        for row in val_rows:
            k = int(Path(row["source_path"]).stem[1:])
            said = wrong.get((model, row["label"], k), row["label"])
            probs = {p: 0.05 for p in PEOPLE}
            probs[said] = 0.9
            preds.append(
                {
                    "model": model,
                    "source_path": row["source_path"],
                    "source_sha256": row["source_sha256"],
                    "label": row["label"],
                    "predicted": said,
                    "confidence": 0.9,
                    "probabilities": list(probs.items()),
                }
            )
    pred_schema = pa.schema(
        [
            ("model", pa.string()),
            ("source_path", pa.string()),
            ("source_sha256", pa.string()),
            ("label", pa.string()),
            ("predicted", pa.string()),
            ("confidence", pa.float32()),
            ("probabilities", pa.map_(pa.string(), pa.float32())),
        ]
    )
    table = pa.Table.from_pylist(preds, schema=pred_schema)
    storage.write_table_atomic(f"{o}/reports/predictions.parquet", table)
    if with_accuracy_json:
        write_accuracy(o, accuracy_rows(table, results, val_rejects=2, labels=sorted(PEOPLE),
                                        references=REFERENCE_ACCURACY))
    return o, photos


# --- static checks ---------------------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if a.get("id"):
            self.ids.add(a["id"])
        for key in ("src", "href", "srcset", "action", "data", "poster"):
            if a.get(key) is not None:
                self.refs.append((tag, key, a[key]))


SECTION_IDS = (
    "summary",
    "accuracy",
    "confusion",
    "training",
    "photos",
    "crops",
    "augmentation",
    "rejects",
    "misclassified",
)


def _check_self_contained(page: str) -> _Collector:
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()  # no JavaScript at all (and rejects' text is escaped)
    assert "<link" not in page.lower()
    assert not re.search(r"url\((?!\s*['\"]?data:)", page)
    parsed = _Collector()
    parsed.feed(page)
    for tag, key, value in parsed.refs:
        if tag == "a" and key == "href":
            assert value.startswith("#"), value
        else:
            assert value.startswith("data:"), (tag, key, value[:60])
    for img in parsed.imgs:
        src = img["src"] or ""
        assert src.startswith("data:image/jpeg;base64,")
        decoded = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        decoded.load()
        assert max(decoded.size) <= 200
    return parsed


def test_report_is_self_contained_and_complete(tmp_path):
    out, photos = build_out(tmp_path, with_accuracy_json=True)  # as evaluation leaves OUT for the report
    uri = write_report(out)
    assert uri == layout.report_file(out, layout.REPORT_HTML) == f"{out}/reports/report.html"
    page = Path(uri).read_text(encoding="utf-8")
    parsed = _check_self_contained(page)
    assert set(SECTION_IDS) <= parsed.ids
    # 6 val photos x (photo + its crop) + 6 val crops + 3 augmentation examples x (photo + 3 crops)
    # + 1 decodable reject + 3 misclassified photos x (photo + crop)
    assert len(parsed.imgs) == 6 * 2 + 6 + 3 * 4 + 1 + 3 * 2
    assert page.count(" · aligned") + page.count(" · margin crop") == 6  # which crop each val photo gave
    # summary counts from the manifest: 12 files, 9 with a face, 15 face rows, 3 rejected
    summary = page.split('id="summary"')[1].split("</section>")[0]
    assert re.search(r'files</div><div class="v">12<', summary)
    assert re.search(r'face rows</div><div class="v">15<', summary)
    assert re.search(r'rejected</div><div class="v">3<', summary)
    total = re.search(r'<tr class="total"><th>total</th>(.*?)</tr>', summary).group(1)
    cells = [int(cell) for cell in re.findall(r'<td class="num[^"]*">(\d+)</td>', total)]
    # photos per split and person count their rejects too; the stray file has neither
    assert sum(cells[0::3]) == 11 and sum(cells[1::3]) == 2 and sum(cells[2::3]) == 15
    accuracy = page.split('id="accuracy"')[1].split("</section>")[0]
    assert "0.667 [" in accuracy  # cnn: 4/6
    assert "0.500 (4/8)" in accuracy  # end-to-end with the 2 val rejects
    assert "0.96" in accuracy and "ImageNet weights unavailable offline" in accuracy
    confusion = page.split('id="confusion"')[1].split("</section>")[0]
    assert confusion.count('<table class="confusion">') == 2  # the two ok models only
    training = page.split('id="training"')[1].split("</section>")[0]
    assert training.count("<polyline") == 8  # 2 models x (loss, accuracy) x (train, holdout)
    assert "<title>kept (epoch 4)</title>" in training and "<dt>best epoch</dt><dd>4</dd>" in training  # from 1
    first_chart = training.split('aria-label="loss"')[1].split("</svg>")[0]
    assert re.findall(r'y="186" text-anchor="middle">([^<]*)</text>', first_chart) == ["1", "2", "3", "4", "5", "6"]
    assert "<dt>in driver</dt><dd>yes</dd>" in training and f"<dd>{'f1' * 6}</dd>" in training
    assert "finished at unix" not in training
    rejects = page.split('id="rejects"')[1].split("</section>")[0]
    for name in ("landscape.jpg", "broken.jpg", "stray.jpg"):
        assert name in rejects
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rejects  # details are escaped text
    assert "image file is truncated &lt;b&gt;&amp;&lt;/b&gt;" in rejects
    assert rejects.count('class="placeholder') == 2  # broken + empty file: no thumbnail
    mis = page.split('id="misclassified"')[1].split("</section>")[0]
    assert mis.count('class="card mis"') == 3
    assert "carol" in mis and "0.90" in mis
    assert len(page.encode()) < 1_500_000
    assert not list((Path(out) / "reports").glob(".tmp-*"))


def test_report_shows_the_unknown_threshold_and_its_curve(tmp_path):
    from faceproc.inference.openset import compute_centroids

    out, _ = build_out(tmp_path, with_accuracy_json=True)
    rng = np.random.default_rng(0)
    embeddings = np.concatenate([np.eye(16)[i] + 0.3 * rng.standard_normal((20, 16)) for i in range(3)])
    table = compute_centroids(embeddings, [p for p in PEOPLE for _ in range(20)], 0.05)
    storage.write_json_atomic(f"{out}/models/facenet/centroids.json", table)
    page = Path(write_report(out)).read_text(encoding="utf-8")
    training = page.split('id="training"')[1].split("</section>")[0]
    calibration = table["calibration"]
    assert f"Unknown beyond distance {table['threshold']:.3f}" in training
    assert f"false accepts {calibration['estimated_far']:.1%} of 60 strangers" in training
    assert "leave-one-person-out" in training
    assert training.count("<polyline") == 8 + 2  # the histories, and false accept / false reject
    curve = training.split('aria-label="error rates"')[1].split("</svg>")[0]
    assert ">distance</text>" in curve and f"<title>threshold (distance {table['threshold']:g})</title>" in curve
    assert "epoch" not in curve
    before_chart = training.split('aria-label="error rates"')[0]
    assert before_chart.endswith('<div class="charts one"><svg class="chart" viewBox="0 0 300 200" role="img" ')


def test_report_uses_accuracy_json_when_present(tmp_path):
    out, _ = build_out(tmp_path, with_accuracy_json=True)
    rows = json.loads(Path(out, "reports/accuracy.json").read_text())
    rows[0]["accuracy"] = 0.123456  # the report shows the published table, not a recomputation
    Path(out, "reports/accuracy.json").write_text(json.dumps(rows))
    page = Path(write_report(out)).read_text(encoding="utf-8")
    assert "0.123 [" in page


def test_report_says_when_accuracy_json_is_missing(tmp_path):
    out, _ = build_out(tmp_path)  # predictions and results, but no accuracy.json
    page = Path(write_report(out)).read_text(encoding="utf-8")
    accuracy = page.split('id="accuracy"')[1].split("</section>")[0]
    assert "reports/accuracy.json is missing" in accuracy
    assert "0.667" not in page  # nothing recomputed from the predictions


def test_report_on_empty_and_partial_outputs(tmp_path):
    out = str(tmp_path / "empty")
    os.makedirs(out)
    page = Path(write_report(out)).read_text(encoding="utf-8")
    _check_self_contained(page)
    assert page.count('class="none"') >= len(SECTION_IDS)
    assert "No models evaluated yet." in page

    # shards and manifest only, a photo that has since moved, an empty rejects file
    out2, photos = build_out(tmp_path / "partial")
    shutil.rmtree(Path(out2) / "models")
    shutil.rmtree(Path(out2) / "reports")
    storage.write_table_atomic(f"{out2}/rejects.parquet", REJECT_SCHEMA.empty_table())
    (photos / "val" / "alice" / "p0.jpg").unlink()
    page = Path(write_report(out2)).read_text(encoding="utf-8")
    parsed = _check_self_contained(page)
    assert "None: every input file produced a face." in page
    assert "No predictions yet." in page
    assert "file not found" in page  # the moved photo gets a placeholder
    assert len(parsed.imgs) >= 5

    # a corrupt manifest: named on the page; without it no shard row is known to be live
    Path(out2, "manifest.parquet").write_bytes(b"not parquet")
    page = Path(write_report(out2)).read_text(encoding="utf-8")
    _check_self_contained(page)
    assert "could not be read" in page and "manifest.parquet" in page  # a corrupt output is named
    assert "No validation faces yet." in page


def _figures(page: str, anchor: str) -> list[tuple[str, str]]:
    """(first image's src or "", file path) of every figure in one section, in page order."""
    html = page.split(f'id="{anchor}"')[1].split("</section>")[0]
    return [(m.group(1) or "", m.group(2))
            for m in re.finditer(r'<figure class="[^"]*">(?:<img [^>]*?src="([^"]+)")?.*?<div class="file" title="([^"]+)"',
                                 html)]


def test_gallery_lists_only_live_photos_after_a_replace_and_a_delete(tmp_path):
    # the rows of a replaced photo (old content) and of a deleted one stay in the shards; the page
    # must show what evaluation sees: the live rows only, the replaced photo with its new crop
    out = tmp_path / "out"
    people = {"alice": [(200, 40, 40), (40, 200, 40), (40, 40, 200)],
              "bob": [(200, 200, 40), (40, 200, 200), (200, 40, 200)]}
    write_face_shards(out, people, split="val", copies=1)
    o = str(out)
    replaced, deleted = "/photos/val/alice/0.jpg", "/photos/val/bob/1.jpg"
    new_sha, run2 = "f" * 64, "20260102T000000Z-test01"
    (first,) = storage.list_files(layout.shard_dir(o, "val"), ".parquet")
    old_row = next(r for r in storage.read_table(first).to_pylist() if r["source_path"] == replaced)
    white = encode_png(np.full((160, 160, 3), 250, np.uint8))
    new_row = old_row | {"source_sha256": new_sha, "run_id": run2, "image": white}
    storage.write_table_atomic(f"{layout.shard_dir(o, 'val')}/{layout.shard_name(run2, 0)}",
                               pa.Table.from_pylist([new_row], schema=FACE_SCHEMA))
    manifest = [r for r in load_manifest(o).to_pylist() if r["path"] != deleted]
    for r in manifest:
        if r["path"] == replaced:
            r.update(sha256=new_sha, run_id=run2)
    storage.write_table_atomic(layout.manifest(o), pa.Table.from_pylist(manifest, schema=MANIFEST_SCHEMA))

    page = Path(write_report(o)).read_text(encoding="utf-8")
    live = sorted(r["path"] for r in manifest)
    assert len(live) == 5  # of the 7 rows in the shards
    photos, crops = _figures(page, "photos"), _figures(page, "crops")
    assert sorted(path for _, path in photos) == live
    assert sorted(path for _, path in crops) == live
    src = next(src for src, path in crops if path == replaced)
    crop = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")
    assert min(crop.getpixel((80, 80))) > 230  # the new content, not the old red crop


# --- a real browser --------------------------------------------------------------------------


@needs_chromium
def test_report_renders_in_headless_chromium(tmp_path):
    out, _ = build_out(tmp_path, with_accuracy_json=True)
    path = Path(write_report(out))
    for result in render(path):
        assert result.images == 37 and result.broken_images == []
        assert result.sideways_overflow <= 1, f"page scrolls sideways at {result.width}px"
        if result.width == 1280 and os.environ.get("FACEPROC_REPORT_SCREENSHOT"):
            Path(os.environ["FACEPROC_REPORT_SCREENSHOT"]).write_bytes(result.screenshot)
        colours, non_white = result.screenshot_stats()
        assert colours > 500, f"screenshot looks blank: {colours} colours"
        assert non_white > 0.15, f"screenshot looks blank: {non_white:.1%} non-white"
        assert result.errors == []
        url = path.resolve().as_uri()
        assert all(u == url or u.startswith("data:") for u in result.requests), result.requests


def test_box_is_drawn_where_the_face_is_on_an_exif_rotated_photo(tmp_path):
    from faceproc.evaluate.report.images import BOX_COLOUR, photo_thumbnail

    shown = Image.new("RGB", (400, 200), (128, 128, 128))  # as displayed: landscape
    stored = shown.transpose(Image.Transpose.ROTATE_90)  # as stored: portrait, EXIF orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, format="JPEG", exif=exif.tobytes())
    src, why = photo_thumbnail(str(path), [40, 20, 160, 120])  # box in displayed pixels
    assert why is None
    thumb = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB")
    assert thumb.size == (200, 100)  # oriented as displayed, longest side 200

    # the box's left edge (x = 40 * 0.5 = 20) is green, the middle of the box and outside are grey
    def greenish(p):
        return p[1] > 150 and p[0] < 120 and p[2] < 160

    assert greenish(thumb.getpixel((21, 35)))
    assert not greenish(thumb.getpixel((50, 35)))
    assert not greenish(thumb.getpixel((150, 80)))
    assert BOX_COLOUR[1] > 200


def test_a_photo_past_pillows_own_limit_is_too_large_to_preview(tmp_path, png_by_hand):
    """Pillow refuses it on opening (a decompression bomb to it): said plainly, not in Pillow's words."""
    from faceproc.evaluate.report.images import photo_thumbnail

    path = tmp_path / "huge.png"
    path.write_bytes(png_by_hand(100_000, 100_000, 8, 2))  # 10 gigapixels declared, a few bytes stored
    assert photo_thumbnail(str(path)) == (None, "too large to preview")
