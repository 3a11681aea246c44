"""identities.html: the faces `faceproc identify` found, grouped by person, unknown faces together.

Each face is its crop as a small embedded JPEG with the photo's name, the probability and the distance
to the nearest known person. The page stays usable with thousands of faces: each group shows at most
MAX_FACES_PER_GROUP (nearest first; the page says how many more), images load lazily and groups the
browser has not scrolled to are not laid out (`content-visibility`). Rows are streamed from the shards,
so the driver keeps only what the page shows.
"""

from __future__ import annotations

import datetime as _dt
import heapq
import itertools
from typing import Any

import pyarrow as pa

from faceproc import __version__
from faceproc.core import storage
from faceproc.core.rejects import read_live_rejects
from faceproc.evaluate.report.images import crop_thumbnail
from faceproc.evaluate.report.markup import basename, breakable, e, img_tag, note, shown_note
from faceproc.evaluate.report.page import html_page
from faceproc.identify.rows import iter_live_identities
from faceproc.inference.openset import UNKNOWN

MAX_FACES_PER_GROUP = 300
MAX_REJECTS = 200
THUMB_SIDE = 96
COLUMNS = ["photo_path", "face_index", "person", "probability", "distance", "face"]
EXTRA_CSS = (
    ".grid.faces{grid-template-columns:repeat(auto-fill,minmax(112px,1fr))}"
    "section.person{content-visibility:auto;contain-intrinsic-size:auto 600px}"
    "figure.crop img.face{width:96px;height:96px;border-radius:6px}"
)


def write_identities_report(uri: str, root: str, manifest: pa.Table, summary: Any) -> None:
    """Render the live identities of `root` (as `manifest` publishes them) to `uri`."""
    storage.write_bytes_atomic(uri, render(root, manifest, summary).encode("utf-8"))


def render(root: str, manifest: pa.Table, summary: Any, generated: _dt.datetime | None = None) -> str:
    groups = _shown_faces(root, manifest)
    counts = summary.faces_by_person
    order = sorted(counts, key=lambda person: (person == UNKNOWN, -counts[person], person))
    nav = "".join(f'<a href="#p-{i}">{e(person)} ({counts[person]:,})</a>' for i, person in enumerate(order))
    legend = ('<p class="muted small">' + e(
        "Each face: its photo; face_index for a photo's second face and on (0, not shown, is the most "
        "confident); p, the model's probability for its top person (for an unknown face, a person it is too "
        "far from); d, its distance to the nearest known person.") + "</p>")
    body = _stats(summary) + legend + "".join(
        _group(i, person, counts[person], groups.get(person, [])) for i, person in enumerate(order))
    if not order:
        body += note("No face identified yet.")
    body += _rejects(root, manifest)
    when = (generated or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    older = (f" ({summary.older_versions:,} faces named by an older version, kept by --keep-old-results)"
             if summary.older_versions else "")
    sub = (f"Identities <code>{e(root)}</code> · model {e(summary.model)} version "
           f"{e(summary.model_version[:12])}{e(older)} · generated {e(when)} · faceproc {e(__version__)}")
    return html_page(f"faceproc identities · {basename(root)}", "faceproc identities", sub,
                     nav + '<a href="#rejects">rejects</a>', body, EXTRA_CSS)


def _shown_faces(root: str, manifest: pa.Table) -> dict[str, list[dict[str, Any]]]:
    """Per person, the MAX_FACES_PER_GROUP faces nearest to a known person (most probable without
    distances), kept in a bounded heap while the rows stream past."""
    heaps: dict[str, list[tuple[float, int, dict[str, Any]]]] = {}
    tie = itertools.count()
    for table in iter_live_identities(root, manifest, COLUMNS):
        for row in table.to_pylist():
            rank = row["distance"] if row["distance"] is not None else 1.0 - row["probability"]
            heap = heaps.setdefault(row["person"], [])
            item = (-rank, next(tie), row)  # max-heap on rank: the farthest shown face is dropped first
            if len(heap) < MAX_FACES_PER_GROUP:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    return {person: [row for _, _, row in sorted(heap, key=lambda x: (-x[0], x[1]))] for person, heap in heaps.items()}


def _stats(summary: Any) -> str:
    known = sum(n for person, n in summary.faces_by_person.items() if person != UNKNOWN)
    cards = [
        ("photos", f"{summary.discovered:,}", "found under the input"),
        ("faces", f"{summary.live_faces:,}", f"in {summary.live_photos:,} photos"),
        ("known", f"{known:,}", f"{len(summary.faces_by_person) - (UNKNOWN in summary.faces_by_person)} people"),
        ("unknown", f"{summary.faces_by_person.get(UNKNOWN, 0):,}", "far from every known person"),
        ("rejected", f"{summary.live_rejects:,}", "photos with no face or unreadable"),
    ]
    return '<div class="stats">' + "".join(
        f'<div class="stat"><div class="k">{e(k)}</div><div class="v">{e(v)}</div><div class="s">{e(s)}</div></div>'
        for k, v, s in cards) + "</div>"


def _group(index: int, person: str, total: int, rows: list[dict[str, Any]]) -> str:
    cells = []
    for row in rows:
        src, why = crop_thumbnail(row["face"], THUMB_SIDE)
        distance = "" if row["distance"] is None else f" · d {row['distance']:.2f}"
        image = img_tag(src, person, why, "face", lazy=True)
        which = f"face_index {row['face_index']} · " if row["face_index"] else ""  # a photo's second face and on
        cells.append(
            f'<figure class="crop">{image}<figcaption>'
            f'<div class="file" title="{e(row["photo_path"])}">{e(basename(row["photo_path"]))}</div>'
            f'<div class="muted small">{e(which)}p {row["probability"]:.2f}{distance}</div></figcaption></figure>')
    return (f'<section class="person" id="p-{index}"><h2>{breakable(person)} '
            f'<span class="muted">{total:,} face{"s" if total != 1 else ""}</span></h2>'
            f'<div class="grid faces">{"".join(cells)}</div>'
            f'{shown_note(total, len(rows), "faces", "nearest")}</section>')


def _rejects(root: str, manifest: pa.Table) -> str:
    rejects = read_live_rejects(root, manifest)
    rows = rejects.slice(0, MAX_REJECTS).to_pylist()
    if not rows:
        return '<section id="rejects"><h2>Rejects</h2>' + note("Every photo gave at least one face.") + "</section>"
    items = "".join(f'<tr><td class="file" title="{e(r["path"])}">{e(basename(r["path"]))}</td>'
                    f'<td>{e(r["reason"])}</td><td class="muted">{e(r["detail"])}</td></tr>' for r in rows)
    return ('<section id="rejects"><h2>Rejects</h2><div class="scroll"><table class="data"><thead><tr>'
            f'<th>photo</th><th>reason</th><th>detail</th></tr></thead><tbody>{items}</tbody></table></div>'
            f'{shown_note(rejects.num_rows, MAX_REJECTS, "rejects")}</section>')
