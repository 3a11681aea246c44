"""`reports/report.html`: one self-contained page that shows what a run did and how well.

Everything the page shows is read from the run's outputs under OUT (manifest, rejects, face
shards, model histories and results, predictions, the accuracy table) and the original photos the
shards point to. Every picture is embedded as a JPEG `data:` URI (thumbnails at most 200 px,
quality 80), the CSS is inline, there is no JavaScript and no external resource, so the file can
be mailed, archived or opened offline. Missing pieces (no models yet, no rejects, a photo that has
moved) are shown as a short note instead of failing the report.

Boxes are drawn on the photo as the photo displays, i.e. after its EXIF orientation is applied,
which is how OpenCV's `imdecode` and Pillow's `exif_transpose` decode it for detection.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageOps

from faceproc import __version__
from faceproc.evaluate import metrics
from faceproc.core import storage
from faceproc.core import layout
from faceproc.core.manifest import load_manifest
from faceproc.evaluate.metrics import fmt
from faceproc.core.rejects import read_live_rejects
from faceproc.config import ALL_MODELS

REPORT_HTML = "reports/report.html"
THUMB_SIDE = 200  # longest side of an embedded photo, px
JPEG_QUALITY = 80
MAX_PREVIEW_BYTES = 64 * 1024 * 1024  # files larger than this are not decoded for a thumbnail
MAX_PREVIEW_PIXELS = 60_000_000  # nor images declaring more pixels than this

BOX_COLOUR = (0, 230, 118)  # bright green, drawn over a dark outline so it shows on any photo
BOX_COLOUR_WRONG = (255, 64, 64)


def e(value: Any) -> str:
    """HTML-escape any value for text or attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


# ---------------------------------------------------------------------------------------------
# Reading the run's outputs


@dataclass
class RunData:
    out_uri: str
    manifest: list[dict[str, Any]] | None = None
    rejects: list[dict[str, Any]] | None = None
    val_faces: list[dict[str, Any]] = field(default_factory=list)  # no image bytes
    val_shards: list[str] = field(default_factory=list)
    train_shards: list[str] = field(default_factory=list)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    histories: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    predictions: list[dict[str, Any]] | None = None
    accuracy: list[dict[str, Any]] | None = None
    labels: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # files that exist but could not be read


def _open_parquet(uri: str) -> pq.ParquetFile:
    fs, path = storage.resolve(uri)
    return pq.ParquetFile(fs.open_input_file(path))


def _read_rows(uri: str, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows of one Parquet file as dicts, only `columns` that the file actually has."""
    pf = _open_parquet(uri)
    names = pf.schema_arrow.names
    cols = [c for c in columns if c in names] if columns is not None else None
    return pf.read(columns=cols).to_pylist()


def _iter_batches(uri: str, columns: Sequence[str], batch_size: int = 64) -> Iterator[pa.RecordBatch]:
    pf = _open_parquet(uri)
    cols = [c for c in columns if c in pf.schema_arrow.names]
    yield from pf.iter_batches(batch_size=batch_size, columns=cols)


def _model_order(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [m for m in ALL_MODELS if m in names] + sorted(names - set(ALL_MODELS))


META_COLUMNS = (
    "label",
    "split",
    "source_path",
    "source_sha256",
    "box",
    "confidence",
    "faces_found",
    "augment_index",
)


def load_run(out_uri: str) -> RunData:
    """Everything the report shows except image bytes, which are read lazily and bounded."""
    data = RunData(out_uri=out_uri)

    def attempt(what: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # a corrupt output is reported on the page, not a crash
            data.problems.append(f"{what}: {type(exc).__name__}: {exc}")
            return None

    manifest = (attempt("manifest.parquet", lambda: load_manifest(out_uri))
                if storage.exists(layout.manifest(out_uri)) else None)
    if manifest is not None:
        data.manifest = manifest.to_pylist()
    if storage.exists(layout.rejects(out_uri)):  # the rows the manifest vouches for; all if it is unreadable
        data.rejects = attempt("rejects.parquet", lambda: read_live_rejects(out_uri, manifest).to_pylist()
                               if manifest is not None else _read_rows(layout.rejects(out_uri)))

    data.val_shards = storage.list_files(storage.join(out_uri, "shards/val"), ".parquet")
    data.train_shards = storage.list_files(storage.join(out_uri, "shards/train"), ".parquet")
    for shard in data.val_shards:
        rows = attempt(f"shard {shard}", lambda shard=shard: _read_rows(shard, META_COLUMNS))
        data.val_faces.extend(rows or [])
    data.val_faces.sort(
        key=lambda r: (str(r.get("label")), str(r.get("source_path")), r.get("augment_index") or 0)
    )

    models_uri = storage.join(out_uri, "models")
    for model in storage.list_dirs(models_uri):
        for fname, target in (("result.json", data.results), ("history.json", data.histories)):
            uri = storage.join(models_uri, model, fname)
            if storage.exists(uri):
                obj = attempt(f"models/{model}/{fname}", lambda uri=uri: storage.read_json(uri))
                if isinstance(obj, dict):
                    target[model] = obj

    pred_uri = storage.join(out_uri, "reports/predictions.parquet")
    if storage.exists(pred_uri):
        data.predictions = attempt("reports/predictions.parquet", lambda: _read_rows(pred_uri))

    acc_uri = storage.join(out_uri, metrics.ACCURACY_JSON)
    if storage.exists(acc_uri):
        acc = attempt(metrics.ACCURACY_JSON, lambda: storage.read_json(acc_uri))
        if isinstance(acc, list):
            data.accuracy = [r for r in acc if isinstance(r, dict)]

    people: set[str] = set()
    for row in data.val_faces:
        people.add(str(row.get("label")))
    for row in data.predictions or []:
        people.add(str(row.get("label")))
        people.update((dict(row.get("probabilities") or {})).keys())
    for row in data.accuracy or []:
        people.update((row.get("per_class") or {}).keys())
    people.discard("None")
    data.labels = sorted(people)

    if data.accuracy is None and (data.results or data.predictions):
        results = [data.results[m] | {"model": m} for m in _model_order(data.results)]
        predicted_models = {str(r["model"]) for r in data.predictions or []}
        results += [{"model": m, "status": "ok"} for m in _model_order(predicted_models - set(data.results))]
        table = pa.Table.from_pylist(
            [
                {"model": r["model"], "label": r["label"], "predicted": r["predicted"]}
                for r in data.predictions or []
            ],
            schema=pa.schema([("model", pa.string()), ("label", pa.string()), ("predicted", pa.string())]),
        )
        data.accuracy = attempt(
            "accuracy table",
            lambda: metrics.accuracy_rows(table, results, val_rejects(data), data.labels),
        )

    ordered = [str(r.get("model")) for r in data.accuracy or []]
    rest = set(data.results) | set(data.histories) | {str(r["model"]) for r in data.predictions or []}
    data.models = ordered + _model_order(rest - set(ordered))
    return data


def val_rejects(data: RunData) -> int:
    return sum(1 for r in data.rejects or [] if r.get("split") == "val")


# ---------------------------------------------------------------------------------------------
# Images


def _jpeg_data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


def _read_limited(uri: str) -> bytes:
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError("file not found")
    if info.size is not None and info.size > MAX_PREVIEW_BYTES:
        raise ValueError(f"{info.size / 1e6:.0f} MB, too large to preview")
    return storage.read_bytes(uri)


def photo_thumbnail(
    uri: str,
    box: Sequence[int] | None = None,
    *,
    wrong: bool = False,
    side: int = THUMB_SIDE,
) -> tuple[str | None, str | None]:
    """(JPEG data URI, None) of the photo at `uri` with `box` drawn, or (None, why not)."""
    try:
        raw = _read_limited(uri)
        if not raw:
            return None, "empty file"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(raw))
            w0, h0 = img.size
            if w0 * h0 > MAX_PREVIEW_PIXELS:
                return None, f"{w0}x{h0} px, too large to preview"
            orientation = img.getexif().get(0x0112, 1)
            logical = (h0, w0) if orientation in (5, 6, 7, 8) else (w0, h0)
            if img.format == "JPEG":
                img.draft("RGB", (side * 2, side * 2))  # decode big JPEGs at a reduced scale
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
            img.thumbnail((side, side), Image.Resampling.LANCZOS)
    except Exception as exc:
        return None, _short_error(exc)
    if box is not None and len(box) == 4:
        sx, sy = img.width / logical[0], img.height / logical[1]
        x0, y0, x1, y1 = (float(v) for v in box)
        rect = [x0 * sx, y0 * sy, x1 * sx, y1 * sy]
        draw = ImageDraw.Draw(img)
        width = max(2, round(max(img.size) / 100))
        # a dark hairline on both sides of the coloured line keeps it visible on any background
        draw.rectangle(
            [rect[0] - 1, rect[1] - 1, rect[2] + 1, rect[3] + 1], outline=(20, 20, 20), width=width + 2
        )
        draw.rectangle(rect, outline=BOX_COLOUR_WRONG if wrong else BOX_COLOUR, width=width)
    return _jpeg_data_uri(img), None


def crop_thumbnail(png: bytes | None) -> tuple[str | None, str | None]:
    """A face crop (PNG bytes from a shard) re-encoded as a JPEG data URI."""
    if not png:
        return None, "no image bytes"
    try:
        with Image.open(io.BytesIO(png)) as img:
            img = _to_rgb(img)
            img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
            return _jpeg_data_uri(img), None
    except Exception as exc:
        return None, _short_error(exc)


def _short_error(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, Image.UnidentifiedImageError):
        text = "not a decodable image"
    return text if len(text) < 120 else text[:117] + "..."


def load_crops(shards: Sequence[str], wanted: set[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
    """PNG bytes of the shard rows keyed (source_path, augment_index) that are in `wanted`.

    Streams the shards in small batches and keeps only the wanted images, so memory is bounded
    by what the page shows, not by the dataset.
    """
    found: dict[tuple[str, int], bytes] = {}
    if not wanted:
        return found
    for shard in shards:
        try:
            for batch in _iter_batches(shard, ("source_path", "augment_index", "image")):
                paths = batch.column("source_path").to_pylist()
                augs = batch.column("augment_index").to_pylist()
                images = batch.column("image")
                for i, (p, a) in enumerate(zip(paths, augs)):
                    key = (p, int(a or 0))
                    if key in wanted and key not in found:
                        found[key] = images[i].as_py()
        except Exception:
            continue  # the page shows a placeholder for what could not be read
        if len(found) == len(wanted):
            break
    return found


# ---------------------------------------------------------------------------------------------
# Small HTML pieces


def _img(src: str | None, alt: str, why: str | None = None, cls: str = "") -> str:
    if src is None:
        return f'<div class="placeholder {e(cls)}"><span>{e(why or "no preview")}</span></div>'
    return f'<img class="{e(cls)}" src="{src}" alt="{e(alt)}" loading="eager">'


def _none(text: str) -> str:
    return f'<p class="none">{e(text)}</p>'


def _badge(status: str | None) -> str:
    status = status or "unknown"
    cls = {"ok": "ok", "skipped": "skip", "failed": "bad", "rejected": "bad"}.get(status, "skip")
    return f'<span class="badge {cls}">{e(status)}</span>'


def _basename(path: Any) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def _section(anchor: str, title: str, body: str, intro: str = "") -> str:
    intro_html = f'<p class="intro">{e(intro)}</p>' if intro else ""
    return f'<section id="{e(anchor)}"><h2>{e(title)}</h2>{intro_html}{body}</section>'


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _tick_label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.0e}"


def line_chart(
    title: str,
    xs: Sequence[float],
    series: Sequence[tuple[str, Sequence[Any], str]],
    *,
    y_min: float | None = None,
    y_max: float | None = None,
    marker_x: float | None = None,
    marker_label: str = "",
) -> str:
    """An inline SVG line chart: `series` is (name, values, css class); None/NaN values are gaps.

    `marker_x` draws a labelled vertical line (the epoch whose weights were kept).
    """
    W, H = 300, 200
    left, right, top, bottom = 40, 10, 28, 30
    pw, ph = W - left - right, H - top - bottom
    clean: list[tuple[str, list[tuple[float, float]], str]] = []
    for name, ys, cls in series:
        pts = []
        for x, y in zip(xs, ys):
            if isinstance(y, (int, float)) and math.isfinite(float(y)):
                pts.append((float(x), float(y)))
        if pts:
            clean.append((name, pts, cls))
    head = f'<text class="ct" x="{left}" y="17">{e(title)}</text>'
    if not clean:
        return (
            f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{e(title)}">{head}'
            f'<text class="axis" x="{W / 2}" y="{H / 2}" text-anchor="middle">no values</text></svg>'
        )
    all_x = [p[0] for _, pts, _ in clean for p in pts]
    all_y = [p[1] for _, pts, _ in clean for p in pts]
    x0, x1 = min(all_x), max(all_x)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    lo = min(all_y) if y_min is None else min(y_min, min(all_y))
    hi = max(all_y) if y_max is None else max(y_max, max(all_y))
    yticks = _nice_ticks(lo, hi, 4)
    if yticks:
        lo, hi = min(lo, yticks[0]), max(hi, yticks[-1])
    if hi == lo:
        hi = lo + 1.0

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - (y - lo) / (hi - lo)) * ph

    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{e(title)}">', head]
    for t in yticks:
        y = py(t)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="axis" x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end">{_tick_label(t)}</text>'
        )
    xticks = [t for t in _nice_ticks(x0, x1, 5) if x0 - 1e-9 <= t <= x1 + 1e-9]
    if all(float(v).is_integer() for v in all_x):
        xticks = [t for t in xticks if float(t).is_integer()] or [x0]
    for t in xticks:
        x = px(t)
        parts.append(f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}"/>')
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{_tick_label(t)}</text>'
        )
    parts.append(f'<line class="frame" x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}"/>')
    parts.append(f'<text class="axis" x="{left + pw}" y="{H - 2}" text-anchor="end">epoch</text>')
    for name, pts, cls in clean:
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline class="line {e(cls)}" points="{coords}"><title>{e(name)}</title></polyline>')
        if len(pts) <= 30:
            for x, y in pts:
                parts.append(
                    f'<circle class="dot {e(cls)}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.4">'
                    f"<title>{e(name)} epoch {x:g}: {y:.4g}</title></circle>"
                )
    if marker_x is not None and x0 <= marker_x <= x1:
        mx = px(marker_x)
        parts.append(
            f'<line class="marker" x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{top + ph}">'
            f"<title>{e(marker_label)} (epoch {marker_x:g})</title></line>"
        )
        anchor = "end" if mx > left + pw * 0.8 else "start"
        dx = -4 if anchor == "end" else 4
        parts.append(
            f'<text class="marker-label" x="{mx + dx:.1f}" y="{top + ph - 6}" text-anchor="{anchor}">'
            f"{e(marker_label)}</text>"
        )
    # legend, top right
    lx = left + pw
    for i, (name, _, cls) in enumerate(reversed(clean)):
        x = lx - i * 80
        parts.append(f'<line class="line {e(cls)}" x1="{x - 74}" x2="{x - 56}" y1="13" y2="13"/>')
        parts.append(f'<text class="legend" x="{x - 52}" y="17">{e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def accuracy_bar(row: Mapping[str, Any]) -> str:
    """A 0..1 scale with the 95% CI as a band, accuracy as a dot and the notebook as a tick."""
    W, H = 150, 20
    acc, lo, hi, ref = (row.get(k) for k in ("accuracy", "ci_low", "ci_high", "reference"))
    parts = [
        f'<svg class="bar" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="accuracy scale">'
    ]
    parts.append(f'<rect class="track" x="0" y="8" width="{W}" height="4" rx="2"/>')
    for q in (0.25, 0.5, 0.75):
        parts.append(f'<line class="q" x1="{q * W}" x2="{q * W}" y1="6" y2="14"/>')
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        parts.append(
            f'<rect class="ci" x="{lo * W:.1f}" y="5" width="{max(1.5, (hi - lo) * W):.1f}" height="10" rx="3">'
            f"<title>95% CI {lo:.3f} – {hi:.3f}</title></rect>"
        )
    if isinstance(ref, (int, float)):
        parts.append(
            f'<line class="ref" x1="{ref * W:.1f}" x2="{ref * W:.1f}" y1="1" y2="19">'
            f"<title>notebook {ref:.2f}</title></line>"
        )
    if isinstance(acc, (int, float)):
        cx = min(W - 4.5, max(4.5, acc * W))
        parts.append(
            f'<circle class="acc" cx="{cx:.1f}" cy="10" r="4.5"><title>accuracy {acc:.3f}</title></circle>'
        )
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Sections


def _summary(data: RunData) -> str:
    manifest = data.manifest
    cards: list[tuple[str, str, str]] = []
    if manifest is not None:
        files = len(manifest)
        ok = sum(1 for r in manifest if r.get("status") == "ok")
        rejected = sum(1 for r in manifest if r.get("status") == "rejected")
        faces = sum(int(r.get("face_rows") or 0) for r in manifest)
        leakage = sum(1 for r in manifest if r.get("leakage"))
        cards += [
            ("files", f"{files:,}", "input files seen"),
            ("photos with a face", f"{ok:,}", f"{ok / files:.0%} of files" if files else ""),
            ("face rows", f"{faces:,}", "crops incl. augmented copies"),
            ("rejected", f"{rejected:,}", "see Rejects below" if rejected else "none"),
        ]
        if leakage:
            cards.append(("leakage", f"{leakage:,}", "files whose content is in two splits"))
    ok_models = [r for r in data.accuracy or [] if r.get("status") == "ok"]
    if data.accuracy:
        best = max(ok_models, key=lambda r: r.get("accuracy") or -1, default=None)
        cards.append(("models ok", f"{len(ok_models)}/{len(data.accuracy)}", ""))
        if best is not None and best.get("accuracy") is not None:
            cards.append(
                ("best accuracy", fmt(best["accuracy"]), f"{best['model']} on {best.get('n')} val faces")
            )
    if not cards:
        return _none("No manifest yet: preprocessing has not published a run here.")
    html_cards = "".join(
        f'<div class="stat"><div class="k">{e(k)}</div><div class="v">{e(v)}</div><div class="s">{e(s)}</div></div>'
        for k, v, s in cards
    )
    body = f'<div class="stats">{html_cards}</div>'
    if manifest:
        body += _dataset_table(manifest)
    return body


def _dataset_table(manifest: list[dict[str, Any]]) -> str:
    splits = sorted({str(r.get("split")) for r in manifest if r.get("split") is not None})
    people = sorted({str(r.get("label")) for r in manifest if r.get("label") is not None})
    if not splits or not people:
        return ""
    ok: Counter[tuple[str, str]] = Counter()
    rej: Counter[tuple[str, str]] = Counter()
    faces: Counter[tuple[str, str]] = Counter()
    for r in manifest:
        key = (str(r.get("split")), str(r.get("label")))
        if r.get("status") == "ok":
            ok[key] += 1
        else:
            rej[key] += 1
        faces[key] += int(r.get("face_rows") or 0)
    head = "".join(f'<th colspan="3" class="grp">{e(s)}</th>' for s in splits)
    sub = "".join(
        '<th class="num">photos</th><th class="num">rejected</th><th class="num">face rows</th>'
        for _ in splits
    )
    rows = []
    for person in people + ["total"]:
        cells = []
        for s in splits:
            if person == "total":
                vals = [sum(c[(s, p)] for p in people) for c in (ok, rej, faces)]
            else:
                vals = [ok[(s, person)], rej[(s, person)], faces[(s, person)]]
            cells += [
                f'<td class="num">{vals[0]}</td>',
                f'<td class="num{" warn" if vals[1] else " dim"}">{vals[1]}</td>',
                f'<td class="num">{vals[2]}</td>',
            ]
        cls = ' class="total"' if person == "total" else ""
        rows.append(f"<tr{cls}><th>{e(person)}</th>{''.join(cells)}</tr>")
    run_ids = sorted({str(r.get("run_id")) for r in manifest if r.get("run_id")})
    runs = ""
    if run_ids:
        shown = ", ".join(f"<code>{e(x)}</code>" for x in run_ids[:6])
        more = f" and {len(run_ids) - 6} more" if len(run_ids) > 6 else ""
        runs = f'<p class="muted small">Content processed by run{"s" if len(run_ids) > 1 else ""} {shown}{more}.</p>'
    return (
        '<div class="scroll"><table class="data dataset">'
        f'<thead><tr><th rowspan="2">person</th>{head}</tr><tr>{sub}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{runs}"
    )


def _accuracy_section(data: RunData) -> str:
    rows = data.accuracy or []
    if not rows:
        return _none("No models evaluated yet.")
    head_cells = []
    for i, h in enumerate(metrics.TABLE_HEADERS):
        head_cells.append(f'<th class="num">{e(h)}</th>' if i in (2, 5, 6, 7) else f"<th>{e(h)}</th>")
        if i == 3:
            head_cells.append('<th class="barcol">scale 0 – 1</th>')
    head = "".join(head_cells)
    body = []
    for row in rows:
        cells = metrics.table_cells(row)
        status = _badge(row.get("status"))
        reason_row = ""
        if row.get("reason"):
            reason_row = (
                f'<tr class="reason-row"><td></td><td colspan="{len(metrics.TABLE_HEADERS)}">'
                f'<div class="reason">{e(row["reason"])}</div></td></tr>'
            )
        acc = row.get("accuracy")
        ref = row.get("reference")
        delta = ""
        if isinstance(acc, (int, float)) and isinstance(ref, (int, float)):
            d = acc - ref
            delta = f'<span class="delta {"up" if d >= 0 else "down"}">{d:+.2f}</span>'
        body.append(
            "<tr>"
            f'<th class="model">{e(cells[0])}</th>'
            f"<td>{status}</td>"
            f'<td class="num">{e(cells[2])}</td>'
            f'<td class="acc">{e(cells[3])}</td>'
            f'<td class="barcol">{accuracy_bar(row) if acc is not None else ""}</td>'
            f'<td class="nowrap">{e(cells[4])}</td>'
            f'<td class="num">{e(cells[5])}</td>'
            f'<td class="num">{e(cells[6])}</td>'
            f'<td class="num">{e(cells[7])} {delta}</td>'
            f"</tr>{reason_row}"
        )
    legend = (
        '<p class="muted small legend-line"><span class="key ci"></span> 95% Wilson interval '
        '<span class="key acc"></span> accuracy <span class="key ref"></span> reference notebook. '
        "Accuracy is over validation face images; end-to-end also counts validation photos rejected "
        f"in preprocessing ({val_rejects(data)}) as errors, as the notebook had to classify every photo.</p>"
    )
    per_class = _per_class_table(rows)
    return f'<div class="scroll"><table class="data acc-table"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{legend}{per_class}'


def _per_class_table(rows: list[dict[str, Any]]) -> str:
    ok = [r for r in rows if r.get("per_class")]
    if not ok:
        return ""
    people = sorted({p for r in ok for p in r["per_class"]})
    head = "".join(f'<th class="num">{e(p)}</th>' for p in people)
    body = []
    for r in ok:
        cells = []
        for p in people:
            v = r["per_class"].get(p)
            if v is None:
                cells.append('<td class="num dim">–</td>')
            else:
                cells.append(f'<td class="num heat" style="--a:{0.08 + 0.5 * v:.2f}">{v:.2f}</td>')
        body.append(f'<tr><th class="model">{e(r["model"])}</th>{"".join(cells)}</tr>')
    return (
        '<h3>Recall per person</h3><div class="scroll"><table class="data recall">'
        f"<thead><tr><th>model</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _confusion_section(data: RunData) -> str:
    if not data.predictions:
        return _none("No predictions yet.")
    ok_models = [r["model"] for r in data.accuracy or [] if r.get("status") == "ok"] or data.models
    by_model: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for r in data.predictions:
        t, p = by_model[str(r["model"])]
        t.append(str(r["label"]))
        p.append(str(r.get("predicted")))
    cards = []
    for model in ok_models:
        if model not in by_model:
            continue
        t, p = by_model[model]
        m = metrics.classification_metrics(t, p, data.labels)
        cards.append(
            f'<div class="card cm"><h3>{e(model)} <span class="muted">· {m["correct"]}/{m["n"]} correct</span></h3>{_confusion_table(m)}</div>'
        )
    if not cards:
        return _none("No model has predictions.")
    return f'<div class="cards two">{"".join(cards)}</div>'


def _breakable(text: Any) -> str:
    """Escaped text that may wrap after underscores, dots and hyphens (long person names)."""
    out = e(text)
    for ch in ("_", ".", "-"):
        out = out.replace(ch, ch + "<wbr>")
    return out


def _confusion_table(m: Mapping[str, Any]) -> str:
    cols = m["confusion_columns"]
    head = "".join(f'<th class="pred" title="{e(c)}">{_breakable(c)}</th>' for c in cols)
    body = []
    for i, (label, counts) in enumerate(zip(m["labels"], m["confusion"])):
        total = sum(counts)
        cells = []
        for j, c in enumerate(counts):
            share = c / total if total else 0.0
            kind = "diag" if i == j else "off"
            style = f' style="--a:{share:.2f}"' if c else ""
            strong = " strong" if share > 0.55 else ""
            cells.append(
                f'<td class="cell {kind}{strong}"{style} title="true {e(label)}, predicted {e(cols[j])}: {c}">{c or ""}</td>'
            )
        recall = m["per_class"].get(label)
        cells.append(f'<td class="num muted">{total}</td><td class="num">{fmt(recall, 2)}</td>')
        body.append(f'<tr><th class="true" title="{e(label)}">{_breakable(label)}</th>{"".join(cells)}</tr>')
    return (
        '<div class="scroll"><table class="confusion">'
        f'<thead><tr><th class="corner">true ↓<br>predicted →</th>{head}<th class="num muted">n</th><th class="num">recall</th></tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


# result.json keys shown first on a model's card, in this order; the others follow.
FACT_ORDER = (
    "train_seconds",
    "epochs_run",
    "best_epoch",
    "best_holdout_loss",
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "device",
    "workers",
    "fit_photos",
    "holdout_photos",
)


def _training_section(data: RunData) -> str:
    if not data.models:
        return _none("No models trained yet.")
    cards = []
    for model in data.models:
        result = data.results.get(model, {})
        acc_row = next((r for r in data.accuracy or [] if r.get("model") == model), {})
        status = result.get("status") or acc_row.get("status")
        reason = result.get("reason") or acc_row.get("reason")
        facts = []
        first = [k for k in FACT_ORDER if k in result]
        for key, value in [(k, result[k]) for k in first] + [
            (k, v) for k, v in result.items() if k not in FACT_ORDER
        ]:
            if key in ("model", "status", "reason") or value is None or isinstance(value, (dict, list)):
                continue
            if key == "train_seconds" and isinstance(value, (int, float)):
                value = f"{value:.1f} s"
            elif isinstance(value, float):
                value = f"{value:.4g}"
            elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
                value = f"{value:,}"
            facts.append(f"<dt>{e(key.replace('_', ' '))}</dt><dd>{e(value)}</dd>")
        facts_html = f'<dl class="facts">{"".join(facts)}</dl>' if facts else ""
        reason_html = f'<p class="reason">{e(reason)}</p>' if reason else ""
        hist = data.histories.get(model)
        if hist:
            charts = _history_charts(hist, result.get("best_epoch"))
        elif status in ("skipped", "failed"):
            charts = ""
        else:
            charts = _none("No training history.")
        cards.append(
            f'<div class="card model"><h3>{e(model)} {_badge(status)}</h3>{reason_html}{facts_html}'
            f'<div class="charts">{charts}</div></div>'
        )
    return f'<div class="cards two">{"".join(cards)}</div>'


def _history_charts(hist: Mapping[str, Any], best_epoch: Any = None) -> str:
    loss = list(hist.get("loss") or [])
    n = max(
        len(loss),
        len(hist.get("accuracy") or []),
        len(hist.get("holdout_loss") or []),
        len(hist.get("holdout_accuracy") or []),
    )
    epochs = list(hist.get("epoch") or [])
    if len(epochs) != n or not all(isinstance(x, (int, float)) for x in epochs):
        epochs = list(range(1, n + 1))
    if n == 0:
        return _none("The history is empty.")
    marker = (
        dict(marker_x=float(best_epoch), marker_label="kept") if isinstance(best_epoch, (int, float)) else {}
    )
    loss_chart = line_chart(
        "loss",
        epochs,
        [("train", hist.get("loss") or [], "train"), ("holdout", hist.get("holdout_loss") or [], "holdout")],
        y_min=0.0,
        **marker,
    )
    acc_chart = line_chart(
        "accuracy",
        epochs,
        [
            ("train", hist.get("accuracy") or [], "train"),
            ("holdout", hist.get("holdout_accuracy") or [], "holdout"),
        ],
        y_min=0.0,
        y_max=1.0,
        **marker,
    )
    return loss_chart + acc_chart


def _model_verdicts(data: RunData) -> dict[str, list[dict[str, Any]]]:
    """Predictions of ok models grouped by source photo path."""
    ok_models = {r["model"] for r in data.accuracy or [] if r.get("status") == "ok"} or set(data.models)
    order = {m: i for i, m in enumerate(data.models)}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in data.predictions or []:
        if str(r.get("model")) in ok_models:
            out[str(r.get("source_path"))].append(r)
    for rows in out.values():
        rows.sort(key=lambda r: order.get(str(r.get("model")), 99))
    return out


def _chips(preds: list[dict[str, Any]]) -> str:
    chips = []
    for p in preds:
        right = p.get("predicted") == p.get("label")
        conf = p.get("confidence")
        conf_s = f" {conf:.2f}" if isinstance(conf, (int, float)) else ""
        if right:
            chips.append(
                f'<span class="chip good" title="{e(p["model"])}: {e(p.get("predicted"))}{conf_s}">✓ {e(p["model"])}</span>'
            )
        else:
            chips.append(
                f'<span class="chip bad" title="{e(p["model"])}: {e(p.get("predicted"))}{conf_s}">✗ {e(p["model"])} → {e(p.get("predicted"))}</span>'
            )
    return f'<div class="chips">{"".join(chips)}</div>' if chips else ""


def _photos_section(data: RunData, max_photos: int) -> str:
    originals = [r for r in data.val_faces if int(r.get("augment_index") or 0) == 0]
    if not originals:
        return _none("No validation faces yet.")
    verdicts = _model_verdicts(data)
    cards = []
    for r in originals[:max_photos]:
        path = str(r.get("source_path"))
        preds = verdicts.get(path, [])
        wrong = any(p.get("predicted") != p.get("label") for p in preds)
        src, why = photo_thumbnail(path, r.get("box"), wrong=wrong)
        faces = int(r.get("faces_found") or 1)
        meta = f"detection {fmt(r.get('confidence'), 3)}"
        if faces > 1:
            meta += f' · <span class="warn">{faces} faces found</span>'
        cards.append(
            f'<figure class="photo{" wrong" if wrong else ""}">{_img(src, _basename(path), why, "thumb")}'
            f'<figcaption><div class="who">{e(r.get("label"))}</div>'
            f'<div class="file" title="{e(path)}">{e(_basename(path))}</div>'
            f'<div class="meta">{meta}</div>{_chips(preds)}</figcaption></figure>'
        )
    note = _shown_note(len(originals), max_photos, "validation photos")
    return f'<div class="grid photos">{"".join(cards)}</div>{note}'


def _shown_note(total: int, limit: int, what: str) -> str:
    if total > limit:
        return f'<p class="muted small">Showing the first {limit} of {total:,} {e(what)}.</p>'
    return ""


def _crops_section(data: RunData, max_photos: int) -> str:
    rows = data.val_faces[:max_photos]
    if not rows:
        return _none("No validation crops yet.")
    wanted = {(str(r["source_path"]), int(r.get("augment_index") or 0)) for r in rows}
    crops = load_crops(data.val_shards, wanted)
    cells = []
    for r in rows:
        key = (str(r["source_path"]), int(r.get("augment_index") or 0))
        src, why = crop_thumbnail(crops.get(key))
        cells.append(
            f'<figure class="crop">{_img(src, r.get("label", ""), why, "face")}'
            f'<figcaption><div class="who">{e(r.get("label"))}</div>'
            f'<div class="file" title="{e(key[0])}">{e(_basename(key[0]))}</div></figcaption></figure>'
        )
    return f'<div class="grid crops">{"".join(cells)}</div>{_shown_note(len(data.val_faces), max_photos, "validation crops")}'


def _augment_section(data: RunData, examples: int) -> str:
    if not data.train_shards:
        return _none("No training shards yet.")
    by_source: dict[str, dict[str, Any]] = {}
    for shard in data.train_shards:
        try:
            for batch in _iter_batches(shard, ("source_path", "label", "augment_index", "box"), 1024):
                for r in batch.to_pylist():
                    entry = by_source.setdefault(
                        str(r["source_path"]), {"label": r.get("label"), "augs": set(), "box": None}
                    )
                    aug = int(r.get("augment_index") or 0)
                    entry["augs"].add(aug)
                    if aug == 0:
                        entry["box"] = r.get("box")
        except Exception as exc:
            data.problems.append(f"shard {shard}: {type(exc).__name__}: {exc}")
    candidates = sorted(
        (path for path, v in by_source.items() if 0 in v["augs"] and len(v["augs"]) > 1),
        key=lambda p: (str(by_source[p]["label"]), p),
    )
    if not candidates:
        return _none("No augmented training rows (augmentation off, or no training faces).")
    # one example per person first, so the examples show different people
    chosen: list[str] = []
    seen_people: set[str] = set()
    for path in candidates:
        if by_source[path]["label"] not in seen_people:
            chosen.append(path)
            seen_people.add(by_source[path]["label"])
        if len(chosen) == examples:
            break
    wanted = {(p, a) for p in chosen for a in sorted(by_source[p]["augs"])[:4]}
    crops = load_crops(data.train_shards, wanted)
    rows = []
    for path in chosen:
        info = by_source[path]
        src, why = photo_thumbnail(path, info["box"], side=THUMB_SIDE)
        items = [
            f'<figure class="aug-src">{_img(src, _basename(path), why, "thumb")}<figcaption>source photo</figcaption></figure>'
        ]
        for aug in sorted(info["augs"])[:4]:
            csrc, cwhy = crop_thumbnail(crops.get((path, aug)))
            cap = "original crop (0)" if aug == 0 else f"augmented #{aug}"
            items.append(
                f'<figure class="crop">{_img(csrc, cap, cwhy, "face")}<figcaption>{e(cap)}</figcaption></figure>'
            )
        rows.append(
            f'<div class="card aug"><h3>{e(info["label"])}</h3><div class="file muted" title="{e(path)}">{e(_basename(path))}</div>'
            f'<div class="aug-row">{"".join(items)}</div></div>'
        )
    return "".join(rows)


def _rejects_section(data: RunData, max_rejects: int) -> str:
    if data.rejects is None:
        return _none("No rejects file yet.")
    if not data.rejects:
        return _none("None: every input file produced a face.")
    counts = Counter(str(r.get("reason")) for r in data.rejects)
    summary = " ".join(f'<span class="chip neutral">{e(k)} × {v}</span>' for k, v in counts.most_common())
    rows = []
    ordered = sorted(data.rejects, key=lambda r: (str(r.get("reason")), str(r.get("path"))))
    for r in ordered[:max_rejects]:
        path = str(r.get("path"))
        src, why = photo_thumbnail(path, None, side=120)
        where = " / ".join(e(x) for x in (r.get("split"), r.get("label")) if x)
        rows.append(
            f'<tr><td class="rthumb">{_img(src, _basename(path), f"no preview: {why}", "rimg")}</td>'
            f'<td><div class="file strong" title="{e(path)}">{e(_basename(path))}</div>'
            f'<div class="muted small path">{e(path)}</div></td>'
            f"<td>{where or '<span class=muted>–</span>'}</td>"
            f'<td><span class="chip neutral">{e(r.get("reason"))}</span></td>'
            f'<td class="detail">{e(r.get("detail"))}</td></tr>'
        )
    return (
        f'<div class="chips summary">{summary}</div><div class="scroll"><table class="data rejects">'
        "<thead><tr><th>preview</th><th>file</th><th>split / person</th><th>reason</th><th>detail</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>{_shown_note(len(data.rejects), max_rejects, 'rejects')}"
    )


def _misclassified_section(data: RunData, max_photos: int) -> str:
    if not data.predictions:
        return _none("No predictions yet.")
    verdicts = _model_verdicts(data)
    boxes = {
        str(r["source_path"]): r.get("box") for r in data.val_faces if int(r.get("augment_index") or 0) == 0
    }
    wrong_paths = sorted(
        (p for p, preds in verdicts.items() if any(x.get("predicted") != x.get("label") for x in preds)),
        key=lambda p: (
            -sum(x.get("predicted") != x.get("label") for x in verdicts[p]),
            str(verdicts[p][0].get("label")),
            p,
        ),
    )
    if not wrong_paths:
        return _none("None: every model classified every validation face correctly.")
    shown = wrong_paths[:max_photos]
    crops = load_crops(data.val_shards, {(p, 0) for p in shown})
    cards = []
    for path in shown:
        preds = verdicts[path]
        label = preds[0].get("label")
        src, why = photo_thumbnail(path, boxes.get(path), wrong=True, side=160)
        csrc, cwhy = crop_thumbnail(crops.get((path, 0)))
        trs = []
        for p in preds:
            right = p.get("predicted") == p.get("label")
            probs = dict(p.get("probabilities") or {})
            p_true = probs.get(label)
            trs.append(
                f'<tr class="{"good" if right else "bad"}"><th>{e(p.get("model"))}</th>'
                f"<td>{'✓' if right else '✗'} {e(p.get('predicted'))}</td>"
                f'<td class="num">{fmt(p.get("confidence"), 2)}</td>'
                f'<td class="num muted">{fmt(p_true, 2)}</td></tr>'
            )
        n_wrong = sum(p.get("predicted") != p.get("label") for p in preds)
        cards.append(
            f'<div class="card mis"><div class="mis-imgs">{_img(src, _basename(path), why, "thumb")}'
            f"{_img(csrc, 'face crop', cwhy, 'face small')}</div>"
            f'<div class="mis-body"><div class="who">{e(label)} <span class="muted small">· wrong in {n_wrong} of {len(preds)} models</span></div>'
            f'<div class="file muted small" title="{e(path)}">{e(_basename(path))}</div>'
            f'<table class="verdicts"><thead><tr><th>model</th><th>said</th><th class="num">conf.</th><th class="num">p(true)</th></tr></thead>'
            f"<tbody>{''.join(trs)}</tbody></table></div></div>"
        )
    return f'<div class="cards mis-grid">{"".join(cards)}</div>{_shown_note(len(wrong_paths), max_photos, "misclassified photos")}'


CSS = """
:root{--fg:#1d2330;--muted:#667085;--bg:#f4f5f8;--card:#fff;--line:#e4e7ec;--accent:#3658d4;
--accent-soft:#dfe6fb;--ok:#12864a;--ok-soft:#dcf5e6;--bad:#c8312b;--bad-soft:#fde4e2;--warn:#b25e09;
--shadow:0 1px 2px rgba(16,24,40,.06),0 1px 3px rgba(16,24,40,.08)}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","Liberation Sans","DejaVu Sans",Arial,sans-serif}
header.top{background:linear-gradient(120deg,#1f2a55,#3658d4);color:#fff;padding:28px 0 22px}
.wrap{max-width:1240px;margin:0 auto;padding:0 24px}
header.top h1{margin:0 0 4px;font-size:26px;font-weight:650;letter-spacing:-.01em}
header.top .sub{opacity:.85;font-size:13.5px}
header.top code{background:rgba(255,255,255,.14);color:#fff}
nav.toc{position:sticky;top:0;z-index:5;background:rgba(255,255,255,.94);backdrop-filter:blur(6px);border-bottom:1px solid var(--line)}
nav.toc .wrap{display:flex;gap:4px;flex-wrap:wrap;padding-top:6px;padding-bottom:6px}
nav.toc a{color:var(--fg);text-decoration:none;font-size:13.5px;padding:4px 10px;border-radius:999px}
nav.toc a:hover{background:var(--accent-soft);color:var(--accent)}
main{padding:8px 0 40px}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;box-shadow:var(--shadow);padding:20px 22px;margin:18px 0}
h2{margin:0 0 12px;font-size:19px;font-weight:650;letter-spacing:-.01em}
h3{margin:0 0 10px;font-size:15.5px;font-weight:620}
p{margin:0 0 10px}
.intro{color:var(--muted);margin-top:-4px}
.muted{color:var(--muted)}.small{font-size:12.5px}.dim{color:#b0b6c3}.warn{color:var(--warn)}.strong{font-weight:600}
code{font:12.5px/1.4 ui-monospace,"SFMono-Regular","DejaVu Sans Mono",Menlo,monospace;background:#eef0f4;padding:1px 5px;border-radius:4px}
.none{color:var(--muted);font-style:italic;margin:4px 0;padding:12px 14px;background:#f8f9fb;border:1px dashed var(--line);border-radius:8px}
.problems{background:var(--bad-soft);border:1px solid #f4b7b2;color:#7a1a16;border-radius:10px;padding:10px 14px;margin:18px 0}
.problems ul{margin:4px 0 0;padding-left:20px}
.stats{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px;margin-bottom:16px}
.stat{border:1px solid var(--line);border-radius:10px;padding:12px 14px;background:linear-gradient(#fff,#fafbfc)}
.stat .k{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
.stat .v{font-size:26px;font-weight:650;font-variant-numeric:tabular-nums;line-height:1.2;margin-top:2px}
.stat .s{font-size:12.5px;color:var(--muted);min-height:1em}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
table.data{width:100%;font-size:14px}
table.data th,table.data td{padding:8px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:middle}
table.data thead th{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);font-weight:600;background:#fafbfc;white-space:nowrap}
table.data tbody tr:hover{background:#fafbff}
table.data th.grp{text-align:center;border-bottom:2px solid var(--accent-soft)}
table.data tr.total th,table.data tr.total td{font-weight:650;border-top:2px solid var(--line)}
table.dataset{width:auto;min-width:60%}
.num{text-align:right!important;white-space:nowrap}
th.model{font-weight:650;white-space:nowrap}
td.acc{white-space:nowrap;font-weight:600}
.reason{color:var(--muted);font-size:12.5px;line-height:1.35;overflow-wrap:anywhere}
.nowrap{white-space:nowrap}
table.data tr.reason-row td{border-top:0;padding-top:0;padding-bottom:10px}
table.data tr:has(+ tr.reason-row) th,table.data tr:has(+ tr.reason-row) td{border-bottom:0}
table.data tbody tr.reason-row:hover{background:transparent}
.badge{display:inline-block;font-size:11.5px;font-weight:650;letter-spacing:.03em;text-transform:uppercase;padding:2px 8px;border-radius:999px;vertical-align:middle}
.badge.ok{background:var(--ok-soft);color:var(--ok)}.badge.bad{background:var(--bad-soft);color:var(--bad)}.badge.skip{background:#eceef2;color:#555e6e}
.delta{font-size:12px;font-weight:600;margin-left:4px}.delta.up{color:var(--ok)}.delta.down{color:var(--bad)}
svg.bar{display:block}svg.bar .track{fill:#e9ecf2}svg.bar .q{stroke:#fff;stroke-width:1.5}svg.bar .ci{fill:#a9b8ef}
svg.bar .acc{fill:var(--accent);stroke:#fff;stroke-width:1.5}svg.bar .ref{stroke:#1d2330;stroke-width:2}
.legend-line{margin-top:10px}
.key{display:inline-block;vertical-align:middle;margin:0 3px 0 10px}
.key.ci{width:20px;height:9px;border-radius:3px;background:#a9b8ef;margin-left:0}.key.acc{width:10px;height:10px;border-radius:50%;background:var(--accent)}.key.ref{width:2px;height:14px;background:#1d2330}
table.recall{width:auto}
td.heat{background:rgba(54,88,212,var(--a))}
.cards{display:grid;gap:16px;align-items:start}.cards>*{min-width:0}
.cards.two{grid-template-columns:repeat(auto-fill,minmax(min(100%,520px),1fr))}
.card{border:1px solid var(--line);border-radius:10px;padding:14px 16px;background:#fff}
.card h3 .muted{font-weight:400;font-size:13px}
table.confusion{font-size:13.5px;margin:0 auto 0 0}
table.confusion th,table.confusion td{padding:6px 8px}
table.confusion th.pred{font-size:11.5px;font-weight:600;color:var(--muted);vertical-align:bottom;text-align:center;max-width:64px;line-height:1.2;padding:4px 2px}
table.confusion th.true{text-align:right;font-weight:600;font-size:12.5px;padding-right:10px;max-width:120px;line-height:1.2}
table.confusion th.corner{font-size:11px;color:var(--muted);font-weight:500;text-align:right;vertical-align:bottom;line-height:1.3}
table.confusion td.cell{min-width:46px;width:52px;height:40px;text-align:center;border:2px solid #fff;border-radius:6px;background:#f3f4f7;font-weight:600}
table.confusion td.diag{background-color:color-mix(in srgb,#12864a calc(var(--a,0)*100%),#f3f4f7)}
table.confusion td.off{background-color:color-mix(in srgb,#c8312b calc(var(--a,0)*100%),#f3f4f7)}
table.confusion td.strong{color:#fff}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(230px,1fr));gap:8px}
svg.chart{width:100%;height:auto;display:block;background:#fcfcfd;border:1px solid var(--line);border-radius:8px}
svg.chart .ct{font-size:14px;font-weight:650;fill:var(--fg)}
svg.chart .axis{font-size:11.5px;fill:var(--muted)}svg.chart .legend{font-size:12px;fill:var(--fg)}
svg.chart .grid{stroke:#eceef2;stroke-width:1}svg.chart .frame,svg.chart .tick{stroke:#b7bdca;stroke-width:1}
svg.chart .line{fill:none;stroke-width:2.2;stroke-linejoin:round;stroke-linecap:round}
svg.chart .train{stroke:#3658d4;fill:#3658d4}svg.chart .holdout{stroke:#e8772e;fill:#e8772e}
svg.chart polyline.line,svg.chart line.line{fill:none}svg.chart line.holdout,svg.chart polyline.holdout{stroke-dasharray:6 4}
dl.facts{display:grid;grid-template-columns:auto 1fr auto 1fr;gap:2px 12px;font-size:13px;margin:0 0 12px}
@media (max-width:640px){dl.facts{grid-template-columns:auto 1fr}}
svg.chart .marker{stroke:#8a93a6;stroke-width:1;stroke-dasharray:2 3}svg.chart .marker-label{font-size:11px;fill:#8a93a6}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.grid{display:grid;gap:14px}
.grid.photos{grid-template-columns:repeat(auto-fill,minmax(min(100%,200px),1fr))}
.grid.crops{grid-template-columns:repeat(auto-fill,minmax(132px,1fr))}
figure{margin:0}
figure.photo{background:#fff;border:1px solid var(--line);border-radius:10px;overflow:hidden;display:flex;flex-direction:column}
figure.photo.wrong{border-color:#f1a39e;box-shadow:0 0 0 2px var(--bad-soft)}
figure.photo img.thumb,figure.photo .placeholder{width:100%;height:190px;object-fit:contain;background:#262a33;display:block}
figcaption{padding:8px 10px 10px;font-size:12.5px;min-width:0}
.who{font-weight:650;font-size:13.5px}.who .muted{font-weight:400}
.file{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;color:var(--muted);font-size:12px;max-width:100%}
.meta{color:var(--muted);font-size:12px}
.chips{display:flex;flex-wrap:wrap;gap:4px;margin-top:6px}
.chips.summary{margin:0 0 12px}
.chip{display:inline-block;font-size:11.5px;padding:1px 7px;border-radius:999px;white-space:nowrap;font-weight:550}
.chip.good{background:var(--ok-soft);color:var(--ok)}.chip.bad{background:var(--bad-soft);color:var(--bad)}.chip.neutral{background:#eceef2;color:#3e4656}
figure.crop{background:#fff;border:1px solid var(--line);border-radius:10px;overflow:hidden}
figure.crop img.face,figure.crop .placeholder{width:100%;aspect-ratio:1/1;height:auto;display:block;object-fit:cover;background:#262a33}
figure.crop figcaption{padding:6px 8px 8px}
.placeholder{display:flex;align-items:center;justify-content:center;text-align:center;background:repeating-linear-gradient(45deg,#f1f2f5,#f1f2f5 8px,#e8eaef 8px,#e8eaef 16px)!important;color:#6b7280;font-size:12px;padding:8px;overflow-wrap:anywhere}
.card.aug{margin-bottom:14px}.card.aug h3{margin-bottom:0}.card.aug .file{margin-bottom:10px}
.aug-row{display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start}
.aug-row figure{width:160px;flex:0 0 auto}
.aug-row figure.aug-src{width:auto;max-width:220px}
.aug-row figure.aug-src img,.aug-row figure.aug-src .placeholder{height:160px;width:auto;max-width:220px;border-radius:8px;display:block;border:1px solid var(--line)}
.aug-row figure.aug-src .placeholder{width:160px}
.aug-row figcaption{font-size:12px;color:var(--muted);padding:4px 2px 0}
table.rejects td.rthumb{width:132px}
table.rejects img.rimg,table.rejects .placeholder{width:120px;height:90px;object-fit:contain;background:#262a33;border-radius:6px;display:flex}
table.rejects .path{max-width:380px;overflow-wrap:anywhere}
table.rejects .file{max-width:380px}
table.rejects td.detail{max-width:380px;overflow-wrap:anywhere;font-size:13px}
.cards.mis-grid{grid-template-columns:repeat(auto-fill,minmax(min(100%,430px),1fr))}
.card.mis{display:flex;gap:14px;align-items:flex-start}
.mis-imgs{display:flex;flex-direction:column;gap:6px;flex:0 0 auto}
.mis-imgs img.thumb,.mis-imgs .placeholder.thumb{width:150px;height:150px;object-fit:contain;background:#262a33;border-radius:8px;display:block}
.mis-imgs img.face,.mis-imgs .placeholder.face{width:72px;height:72px;border-radius:6px;display:block}
.mis-body{min-width:0;flex:1}
table.verdicts{width:100%;font-size:13px;margin-top:8px}
table.verdicts th,table.verdicts td{padding:4px 6px;border-bottom:1px solid var(--line);text-align:left}
table.verdicts thead th{font-size:11px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;font-weight:600}
table.verdicts tr.bad td{color:var(--bad);font-weight:600}table.verdicts tr.good td{color:var(--ok)}
footer{color:var(--muted);font-size:12.5px;text-align:center;padding:10px 0 30px}
@media (max-width:640px){.grid.photos{grid-template-columns:repeat(auto-fill,minmax(150px,1fr))}figure.photo img.thumb,figure.photo .placeholder{height:150px}.wrap{padding:0 12px}section{padding:16px 14px}.card.mis{flex-direction:column;align-items:stretch}.mis-imgs{flex-direction:row}header.top h1{font-size:22px}}
@media print{nav.toc{display:none}section{box-shadow:none;break-inside:avoid-page}}
"""


SECTIONS = (
    ("summary", "Run summary"),
    ("accuracy", "Accuracy"),
    ("confusion", "Confusion matrices"),
    ("training", "Training"),
    ("photos", "Validation photos"),
    ("crops", "Validation face crops"),
    ("augmentation", "Augmentation"),
    ("rejects", "Rejects"),
    ("misclassified", "Misclassified"),
)


def render_report(
    data: RunData,
    *,
    max_photos: int = 120,
    max_rejects: int = 200,
    augment_examples: int = 3,
    generated: _dt.datetime | None = None,
) -> str:
    """The report page for `data` as an HTML string."""
    generated = generated or _dt.datetime.now(_dt.timezone.utc)
    bodies = {
        "summary": ("", _summary(data)),
        "accuracy": (
            "",
            _accuracy_section(data),
        ),
        "confusion": (
            "Rows are the true person, columns what the model said; shading is the share of the row.",
            _confusion_section(data),
        ),
        "training": (
            "Per epoch, on the training rows and on the holdout used for early stopping.",
            _training_section(data),
        ),
        "photos": (
            "Original validation photos with the detected face box; each chip is one model's verdict.",
            _photos_section(data, max_photos),
        ),
        "crops": ("The 160×160 face crops the models see.", _crops_section(data, max_photos)),
        "augmentation": (
            "A training photo's original crop beside its augmented copies.",
            _augment_section(data, augment_examples),
        ),
        "rejects": (
            "Every input file that produced no face row, with the reason.",
            _rejects_section(data, max_rejects),
        ),
        "misclassified": (
            "Validation photos that at least one model got wrong, and what each model said.",
            _misclassified_section(data, max_photos),
        ),
    }
    sections = "".join(_section(a, t, bodies[a][1], bodies[a][0]) for a, t in SECTIONS)
    nav = "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in SECTIONS)
    problems = ""
    if data.problems:
        items = "".join(f"<li>{e(p)}</li>" for p in data.problems)
        problems = (
            f'<div class="problems"><strong>Some outputs could not be read</strong><ul>{items}</ul></div>'
        )
    when = generated.strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light">'
        f"<title>faceproc report · {e(_basename(data.out_uri))}</title>"
        f"<style>{CSS}</style></head><body>"
        '<header class="top"><div class="wrap"><h1>faceproc report</h1>'
        f'<div class="sub">Output <code>{e(data.out_uri)}</code> · generated {e(when)} · faceproc {e(__version__)}</div>'
        "</div></header>"
        f'<nav class="toc"><div class="wrap">{nav}</div></nav>'
        f'<main class="wrap">{problems}{sections}</main>'
        f'<footer class="wrap">Self-contained: every image is embedded. faceproc {e(__version__)}.</footer>'
        "</body></html>\n"
    )


def write_report(
    out_uri: str,
    *,
    max_photos: int = 120,
    max_rejects: int = 200,
    augment_examples: int = 3,
) -> str:
    """Build `reports/report.html` under `out_uri` from the run's outputs; returns its URI.

    At most `max_photos` validation photos/crops/misclassified photos and `max_rejects` rejects
    are shown (the page says when there are more), so the file stays small as data grows.
    """
    data = load_run(out_uri)
    page = render_report(
        data, max_photos=max_photos, max_rejects=max_rejects, augment_examples=augment_examples
    )
    uri = storage.join(out_uri, REPORT_HTML)
    storage.write_bytes_atomic(uri, page.encode("utf-8"))
    return uri


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - convenience entry
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m faceproc.report OUT", file=sys.stderr)
        return 2
    print(write_report(args[0]))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
