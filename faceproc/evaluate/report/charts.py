"""Inline SVG charts for the report (pure functions returning SVG strings; styled by report.css)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from faceproc.evaluate.report.markup import e


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round values (steps of 1, 2, 2.5 or 5 x 10^k) covering lo..hi."""
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
    """Short axis text: small learning-rate-like values in exponent form."""
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
    x_label: str = "epoch",
) -> str:
    """An inline SVG line chart: `series` is (name, values, css class); None/NaN values are gaps.

    `marker_x` draws a labelled vertical line (the epoch whose weights were kept, a threshold).
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
    parts.append(f'<text class="axis" x="{left + pw}" y="{H - 2}" text-anchor="end">{e(x_label)}</text>')
    for name, pts, cls in clean:
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        parts.append(f'<polyline class="line {e(cls)}" points="{coords}"><title>{e(name)}</title></polyline>')
        if len(pts) <= 30:
            for x, y in pts:
                parts.append(
                    f'<circle class="dot {e(cls)}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.4">'
                    f"<title>{e(name)} at {e(x_label)} {x:g}: {y:.4g}</title></circle>"
                )
    if marker_x is not None and x0 <= marker_x <= x1:
        mx = px(marker_x)
        parts.append(
            f'<line class="marker" x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{top + ph}">'
            f"<title>{e(marker_label)} ({e(x_label)} {marker_x:g})</title></line>"
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

