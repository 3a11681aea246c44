"""The small HTML pieces every report section is built from, so each is spelled once."""

from __future__ import annotations

import html
from typing import Any


def e(value: Any) -> str:
    """HTML-escape any value for text or attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def img_tag(src: str | None, alt: str, why: str | None = None, cls: str = "", lazy: bool = False) -> str:
    """An embedded image, or a placeholder that says why there is none; `lazy` for long pages."""
    if src is None:
        return f'<div class="placeholder {e(cls)}"><span>{e(why or "no preview")}</span></div>'
    return f'<img class="{e(cls)}" src="{src}" alt="{e(alt)}" loading="{"lazy" if lazy else "eager"}">'


def note(text: str) -> str:
    """What a section shows when there is nothing to show."""
    return f'<p class="none">{e(text)}</p>'


def badge(status: str | None) -> str:
    status = status or "unknown"
    cls = {"ok": "ok", "skipped": "skip", "failed": "bad", "rejected": "bad"}.get(status, "skip")
    return f'<span class="badge {cls}">{e(status)}</span>'


def basename(path: Any) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def section(anchor: str, title: str, body: str, intro: str = "") -> str:
    intro_html = f'<p class="intro">{e(intro)}</p>' if intro else ""
    return f'<section id="{e(anchor)}"><h2>{e(title)}</h2>{intro_html}{body}</section>'


def shown_note(total: int, limit: int, what: str, which: str = "first") -> str:
    """Says that a list was cut at `limit`, and which of its items were kept, so a short page is not
    mistaken for a small run."""
    if total > limit:
        return (f'<p class="muted small">Showing the {e(which)} {limit} of {total:,} {e(what)} '
                f'({total - limit:,} more not shown).</p>')
    return ""


def breakable(text: Any) -> str:
    """Escaped text that may wrap after underscores, dots and hyphens (long person names)."""
    out = e(text)
    for ch in ("_", ".", "-"):
        out = out.replace(ch, ch + "<wbr>")
    return out
