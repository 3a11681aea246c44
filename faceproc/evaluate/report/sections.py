"""The report's summary and model sections: run summary, accuracy, confusion matrices, training.

Each section function takes the `RunData` and returns the section body as HTML; the accuracy
numbers are accuracy.json's, formatted by `tables.table_cells` like the text and Markdown tables.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from faceproc.core import layout
from faceproc.core.manifest import rejected_count
from faceproc.core.schema import Status
from faceproc.evaluate import metrics, tables
from faceproc.evaluate.report.charts import accuracy_bar, line_chart
from faceproc.evaluate.report.data import RunData
from faceproc.evaluate.report.markup import badge, breakable, e, note
from faceproc.evaluate.tables import fmt
from faceproc.inference.openset import threshold_warning


def summary_section(data: RunData) -> str:
    """Counts from the manifest and the accuracy table, then files per split and person."""
    manifest = data.manifest.to_pylist() if data.manifest is not None else None
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
    ok_models = [r for r in data.accuracy or [] if r.get("status") == Status.OK]
    if data.accuracy:
        best = max(ok_models, key=lambda r: r.get("accuracy") or -1, default=None)
        cards.append(("models ok", f"{len(ok_models)}/{len(data.accuracy)}", ""))
        if best is not None and best.get("accuracy") is not None:
            cards.append(
                ("best accuracy", fmt(best["accuracy"]), f"{best['model']} on {best.get('n')} val faces")
            )
    if not cards:
        return note("No manifest yet: preprocessing has not published a run here.")
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
    photos: Counter[tuple[str, str]] = Counter()  # every file of the person and split, rejected ones too
    rej: Counter[tuple[str, str]] = Counter()
    faces: Counter[tuple[str, str]] = Counter()
    for r in manifest:
        key = (str(r.get("split")), str(r.get("label")))
        photos[key] += 1
        if r.get("status") != Status.OK:
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
                vals = [sum(c[(s, p)] for p in people) for c in (photos, rej, faces)]
            else:
                vals = [photos[(s, person)], rej[(s, person)], faces[(s, person)]]
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


def accuracy_section(data: RunData) -> str:
    """accuracy.json as evaluation wrote it, one row per model, with recall per person below."""
    rows = data.accuracy
    if rows is None and data.models:
        return note(f"No accuracy table: {layout.REPORTS_DIR}/{layout.ACCURACY_JSON} is missing or unreadable "
                    "(evaluation writes it before this page).")
    if not rows:
        return note("No models evaluated yet.")
    head_cells = []
    for i, h in enumerate(tables.TABLE_HEADERS):
        head_cells.append(f'<th class="num">{e(h)}</th>' if i in (2, 5, 6, 7) else f"<th>{e(h)}</th>")
        if i == 3:
            head_cells.append('<th class="barcol">scale 0 – 1</th>')
    head = "".join(head_cells)
    body = []
    for row in rows:
        cells = tables.table_cells(row)
        status = badge(row.get("status"))
        reason_row = ""
        if row.get("reason"):
            reason_row = (
                f'<tr class="reason-row"><td></td><td colspan="{len(tables.TABLE_HEADERS)}">'
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
    rejected = f" ({rejected_count(data.manifest, 'val')})" if data.manifest is not None else ""
    with_reference = any(row.get("reference") is not None for row in rows)
    reference = ('<span class="key ref"></span> reference notebook' if with_reference
                 else "(no reference notebook: these are not its 25 validation photos)")
    legend = (
        '<p class="muted small legend-line"><span class="key ci"></span> 95% Wilson interval '
        f'<span class="key acc"></span> accuracy {reference}. '
        "Accuracy is over validation face images; end-to-end also counts validation photos rejected "
        f"in preprocessing{rejected} as errors, as the notebook had to classify every photo.</p>"
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


def confusion_section(data: RunData) -> str:
    """A confusion matrix per ok model, from its rows in predictions.parquet."""
    if not data.predictions:
        return note("No predictions yet.")
    by_model: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for r in data.predictions:
        t, p = by_model[str(r["model"])]
        t.append(str(r["label"]))
        p.append(str(r.get("predicted")))
    cards = []
    for model in data.ok_models():
        if model not in by_model:
            continue
        t, p = by_model[model]
        m = metrics.classification_metrics(t, p, data.labels)
        cards.append(
            f'<div class="card cm"><h3>{e(model)} <span class="muted">· {m["correct"]}/{m["n"]} correct</span></h3>{_confusion_table(m)}</div>'
        )
    if not cards:
        return note("No model has predictions.")
    return f'<div class="cards two">{"".join(cards)}</div>'


def _confusion_table(m: Mapping[str, Any]) -> str:
    cols = m["confusion_columns"]
    head = "".join(f'<th class="pred" title="{e(c)}">{breakable(c)}</th>' for c in cols)
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
        body.append(f'<tr><th class="true" title="{e(label)}">{breakable(label)}</th>{"".join(cells)}</tr>')
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
    "in_driver",
    "fit_photos",
    "holdout_photos",
)


# result.json keys a model's card leaves out: in its title, or for programs (when a skipped model may retry).
HIDDEN_FACTS = frozenset({"model", "status", "reason", "finished_at_unix"})


def training_section(data: RunData) -> str:
    """A card per model: status, the facts of its result.json and its loss/accuracy curves."""
    if not data.models:
        return note("No models trained yet.")
    cards = []
    for model in data.models:
        result = data.results.get(model, {})
        acc_row = next((r for r in data.accuracy or [] if r.get("model") == model), {})
        status = result.get("status") or acc_row.get("status")
        reason = result.get("reason") or acc_row.get("reason")
        if acc_row.get("status") == Status.STALE:  # trained fine, but not on the crops evaluated now
            status, reason = acc_row["status"], acc_row.get("reason")
        facts = []
        first = [k for k in FACT_ORDER if k in result]
        for key, value in [(k, result[k]) for k in first] + [
            (k, v) for k, v in result.items() if k not in FACT_ORDER
        ]:
            if key in HIDDEN_FACTS or value is None or isinstance(value, (dict, list)):
                continue
            if key == "train_seconds" and isinstance(value, (int, float)):
                value = f"{value:.1f} s"
            elif key == "best_epoch" and isinstance(value, int):
                if value < 0:  # no epoch was recorded
                    continue
                value = value + 1  # result.json holds the index into history.json; the console counts from 1
            elif isinstance(value, bool):
                value = "yes" if value else "no"
            elif key in ("fingerprint", "model_version", "embedder") and isinstance(value, str):
                value = value[:12]
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
        elif status in (Status.SKIPPED, Status.FAILED):
            charts = ""
        else:
            charts = note("No training history.")
        calibration = data.calibrations.get(model)
        open_set = _open_set(calibration) if calibration else ""
        cards.append(
            f'<div class="card model"><h3>{e(model)} {badge(status)}</h3>{reason_html}{facts_html}'
            f'<div class="charts">{charts}</div>{open_set}</div>'
        )
    return f'<div class="cards two">{"".join(cards)}</div>'


def _history_charts(hist: Mapping[str, Any], best_epoch: Any = None) -> str:
    """Loss and accuracy per epoch, train and holdout, with the kept epoch marked."""
    loss = list(hist.get("loss") or [])
    n = max(
        len(loss),
        len(hist.get("accuracy") or []),
        len(hist.get("holdout_loss") or []),
        len(hist.get("holdout_accuracy") or []),
    )
    indices = list(hist.get("epoch") or [])  # history.json counts epochs from 0, the console from 1
    if len(indices) != n or not all(isinstance(x, (int, float)) for x in indices):
        indices = list(range(n))
    epochs = [index + 1 for index in indices]
    if n == 0:
        return note("The history is empty.")
    marker = (
        dict(marker_x=float(best_epoch) + 1, marker_label="kept")
        if isinstance(best_epoch, (int, float)) and best_epoch >= 0 else {}  # -1: the warm start's own weights
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


def _open_set(calibration: Mapping[str, Any]) -> str:
    """The unknown-person threshold: how it was chosen, its estimated error rates and the curve."""
    threshold = calibration.get("threshold")
    far, frr = calibration.get("estimated_far"), calibration.get("estimated_frr")
    if not isinstance(threshold, (int, float)):
        return ""
    text = f"Unknown beyond distance {threshold:.3f} ({e(calibration.get('method', ''))}"
    if isinstance(far, (int, float)) and isinstance(frr, (int, float)):
        text += (f"; target false-accept rate {calibration.get('target_far', 0):.0%}: estimated false accepts "
                 f"{far:.1%} of {calibration.get('impostor_trials', '?')} strangers, false rejects {frr:.1%} of "
                 f"{calibration.get('genuine_trials', '?')} known faces")
    html = f'<p class="open-set">{text}).</p>'
    warning = threshold_warning(dict(calibration))
    if warning:
        html += f'<p class="open-set warn">{e(warning[0].upper() + warning[1:])}.</p>'
    curve = calibration.get("curve")
    if isinstance(curve, Mapping) and curve.get("threshold"):
        html += '<div class="charts one">' + line_chart(
            "error rates", list(curve["threshold"]),
            [("FAR", curve.get("far") or [], "holdout"), ("FRR", curve.get("frr") or [], "train")],
            y_min=0.0, y_max=1.0, marker_x=float(threshold), marker_label="threshold",
            x_label="distance") + "</div>"
    return html
