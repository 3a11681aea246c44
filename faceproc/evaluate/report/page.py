"""The report page: its skeleton (header, table of contents, SECTIONS in order, inline CSS) and the write.

`write_report` is the entry point evaluation calls once predictions and accuracy.json are written.
"""

from __future__ import annotations

import datetime as _dt
from importlib import resources

from faceproc import __version__
from faceproc.core import layout, storage
from faceproc.evaluate.report import gallery, sections
from faceproc.evaluate.report.data import RunData, load_run
from faceproc.evaluate.report.markup import basename, e, section

# (anchor, title), in page order.
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


def stylesheet() -> str:
    """The stylesheet shipped as package data (see pyproject.toml), inlined into every page."""
    return resources.files(__package__).joinpath("assets", "report.css").read_text(encoding="utf-8")


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
        "summary": ("", sections.summary_section(data)),
        "accuracy": ("", sections.accuracy_section(data)),
        "confusion": (
            "Rows are the true person, columns what the model said; shading is the share of the row.",
            sections.confusion_section(data),
        ),
        "training": (
            "Per epoch, on the training rows and on the holdout used for early stopping.",
            sections.training_section(data),
        ),
        "photos": (
            "Original validation photos with the detected face box; each chip is one model's verdict.",
            gallery.photos_section(data, max_photos),
        ),
        "crops": ("The 160×160 face crops the models see.", gallery.crops_section(data, max_photos)),
        "augmentation": (
            "A training photo's original crop beside its augmented copies.",
            gallery.augment_section(data, augment_examples),
        ),
        "rejects": (
            "Every input file that produced no face row, with the reason.",
            gallery.rejects_section(data, max_rejects),
        ),
        "misclassified": (
            "Validation photos that at least one model got wrong, and what each model said.",
            gallery.misclassified_section(data, max_photos),
        ),
    }
    body = "".join(section(a, t, bodies[a][1], bodies[a][0]) for a, t in SECTIONS)
    nav = "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in SECTIONS)
    problems = ""
    if data.problems:
        items = "".join(f"<li>{e(p)}</li>" for p in data.problems)
        problems = (
            f'<div class="problems"><strong>Some outputs could not be read</strong><ul>{items}</ul></div>'
        )
    when = generated.strftime("%Y-%m-%d %H:%M UTC")
    sub = f"Output <code>{e(data.out_uri)}</code> · generated {e(when)} · faceproc {e(__version__)}"
    return html_page(f"faceproc report · {basename(data.out_uri)}", "faceproc report", sub, nav, problems + body)


def html_page(title: str, heading: str, sub_html: str, nav_html: str, main_html: str, extra_css: str = "") -> str:
    """The one page skeleton of faceproc's reports (report.html, identities.html): head with the
    stylesheet inlined, header, table of contents, main, footer. `title` and `heading` are escaped here."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light">'
        f"<title>{e(title)}</title>"
        f"<style>{stylesheet()}{extra_css}</style></head><body>"
        f'<header class="top"><div class="wrap"><h1>{e(heading)}</h1><div class="sub">{sub_html}</div></div></header>'
        f'<nav class="toc"><div class="wrap">{nav_html}</div></nav>'
        f'<main class="wrap">{main_html}</main>'
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
    uri = layout.report_file(out_uri, layout.REPORT_HTML)
    storage.write_bytes_atomic(uri, page.encode("utf-8"))
    return uri
