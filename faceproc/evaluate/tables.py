"""The accuracy table for people: aligned text for the terminal, markdown, CSV, and the files
`reports/accuracy.{json,csv,md}`. The rows come from `metrics.accuracy_rows`."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from faceproc.core import layout, storage
from faceproc.core.text import aligned_table
from faceproc.evaluate.metrics import ROW_KEYS, clean


def fmt(value: Any, digits: int = 3) -> str:
    """A metric for people: '–' for missing or NaN, fixed digits for floats."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


TABLE_HEADERS: tuple[str, ...] = (
    "model",
    "status",
    "n",
    "accuracy [95% CI]",
    "end-to-end",
    "macro F1",
    "train s",
    "notebook",
)
NUMERIC_COLUMNS = frozenset({"n", "macro F1", "train s", "notebook"})  # right-aligned in text


def table_cells(row: Mapping[str, Any]) -> list[str]:
    """The display cells of one accuracy row, in `TABLE_HEADERS` order (shared by md/text/html)."""
    if row.get("accuracy") is None:
        acc = "–"
    elif row.get("ci_low") is None:
        acc = fmt(row["accuracy"])
    else:
        acc = f"{fmt(row['accuracy'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
    if row.get("accuracy_end_to_end") is None:
        e2e = "–"
    else:
        n_e2e = row.get("n_end_to_end") or 0
        correct = round(row["accuracy_end_to_end"] * n_e2e)
        e2e = f"{fmt(row['accuracy_end_to_end'])} ({correct}/{n_e2e})"
    secs = row.get("train_seconds")
    return [
        str(row.get("model", "")),
        str(row.get("status", "")),
        fmt(row.get("n")),
        acc,
        e2e,
        fmt(row.get("macro_f1")),
        "–" if secs is None else f"{float(secs):.1f}",
        fmt(row.get("reference"), 2),
    ]


def _notes(rows: Iterable[Mapping[str, Any]], bullet: str, escape: Callable[[str], str] = str) -> list[str]:
    """The skip/fail reasons below a table, after a blank line; nothing when no row has one."""
    notes = [f"{row.get('model')} {row.get('status')}: {row.get('reason')}" for row in rows if row.get("reason")]
    return ["", *(f"{bullet} {escape(note)}" for note in notes)] if notes else []


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The accuracy table as aligned plain text for a terminal, with skip/fail reasons below."""
    out = aligned_table(TABLE_HEADERS, [table_cells(row) for row in rows], right=NUMERIC_COLUMNS)
    if not rows:
        out.append("(no models)")
    return "\n".join(out + _notes(rows, "*")) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def format_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The accuracy table as GitHub-flavoured markdown, with skip/fail reasons below it."""
    out = [
        "# Accuracy",
        "",
        "Accuracy is over validation face images, with its 95% Wilson interval. End-to-end also "
        "counts validation photos rejected in preprocessing as errors. Notebook: the reference "
        "notebook's accuracy on the same 25 validation photos, shown only when the validation photos "
        "are those.",
        "",
        "| " + " | ".join(TABLE_HEADERS) + " |",
        "|" + "|".join(["---", "---", "---:", "---", "---", "---:", "---:", "---:"]) + "|",
    ]
    for row in rows:
        out.append("| " + " | ".join(_md_escape(c) for c in table_cells(row)) + " |")
    if not rows:
        out += ["", "No models."]
    return "\n".join(out + _notes(rows, "-", _md_escape)) + "\n"


def _people(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    people: set[str] = set()
    for row in rows:
        people.update((row.get("per_class") or {}).keys())
    return sorted(people)


def format_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Flat CSV: the scalar row keys, then one `recall_<person>` column per person."""
    people = _people(rows)
    scalar = [k for k in ROW_KEYS if k != "per_class"]
    header = scalar + [f"recall_{p}" for p in people]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        per_class = row.get("per_class") or {}
        values = [row.get(k) for k in scalar] + [per_class.get(p) for p in people]
        writer.writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def write_accuracy(out_uri: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Write `reports/accuracy.json`, `.csv` and `.md` under `out_uri`, each atomically.

    Returns the URIs written.
    """
    rows = [clean(dict(row)) for row in rows]
    outputs = {
        layout.ACCURACY_JSON: json.dumps(rows, indent=2, allow_nan=False) + "\n",
        layout.ACCURACY_CSV: format_csv(rows),
        layout.ACCURACY_MD: format_markdown(rows),
    }
    written = []
    for name, text in outputs.items():
        uri = layout.report_file(out_uri, name)
        storage.write_bytes_atomic(uri, text.encode("utf-8"))
        written.append(uri)
    return written
